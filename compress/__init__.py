"""The compression pipeline (needs the ``compress`` extra): ``vledge.compress.compress(teacher, out=..., target=...)``."""

__all__ = ["CompressConfig", "CompressReport", "compress", "resolve_config"]


def __getattr__(name):
    # Lazy, so that the torch-free modules (vledge.compress.bundle, used by `vledge labels` on a device)
    # import without the pipeline, which needs torch.
    if name in ("CompressConfig", "resolve_config"):
        from vledge.compress import config

        return getattr(config, name)
    if name in ("CompressReport", "compress"):
        from vledge.compress import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'vledge.compress' has no attribute {name!r}")
