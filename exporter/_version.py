"""The package version, in a leaf module: submodules read it without importing the root."""

__version__ = "0.1.0"
