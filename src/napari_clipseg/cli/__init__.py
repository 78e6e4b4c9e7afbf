"""The ``napari-clipseg`` command line (``main``); arguments are checked before any heavy import."""

from .main import main

__all__ = ["main"]
