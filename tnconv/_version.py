"""The package version, in a module that imports nothing (``tnconv.__version__``)."""

__version__ = "0.1.0"
