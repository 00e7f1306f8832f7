"""vledge's version, in a module of its own: any part of vledge reads it without importing the package's face."""

__version__ = "0.1.0"
