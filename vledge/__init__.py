"""vledge: compress jointly trained vision-language models and run them on edge devices."""

__version__ = "0.1.0"
