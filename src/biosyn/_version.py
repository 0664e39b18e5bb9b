"""The package version, in a leaf module: the layers read it without importing the package root
(whose lazy exports would otherwise tie every layer to every other)."""

__version__ = "0.1.0"
