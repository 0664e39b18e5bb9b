"""`biosyn serve`: the HTTP API (FastAPI) and a web page over a model with an index."""

from .app import Limits, create_app

__all__ = ["Limits", "create_app"]
