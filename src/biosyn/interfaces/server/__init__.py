"""`biosyn serve`: the HTTP API (FastAPI) and a web page over a model with an index."""

from .limits import Limits

__all__ = ["Limits", "create_app"]


def __getattr__(name: str):
    if name == "create_app":  # on first use: FastAPI takes a while to import, and the CLI's parser needs only Limits
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
