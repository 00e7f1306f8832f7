"""The compression pipeline (needs the ``compress`` extra): ``vledge.compress.compress(teacher, out=..., target=...)``."""

from vledge.compress.config import CompressConfig, resolve_config
from vledge.compress.pipeline import CompressReport, compress

__all__ = ["CompressConfig", "CompressReport", "compress", "resolve_config"]
