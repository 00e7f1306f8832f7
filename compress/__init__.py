"""The compression pipeline (needs the ``compress`` extra): ``vledge.compress.compress(teacher, out=..., target=...)``.

Besides the whole pipeline, its stages are public one by one (``distilled_student``, ``export_towers``,
``quantize_towers_for_target``, ``fp32_tower``, ``write_bundle``), so that a caller such as ``vledge bench``
builds variants with the pipeline's own steps.
"""

# public name -> the module (under vledge.compress) that defines it
_PUBLIC = {
    "CompressConfig": "config",
    "resolve_config": "config",
    "CompressReport": "pipeline",
    "compress": "pipeline",
    "distilled_student": "stages",
    "export_towers": "stages",
    "fp32_tower": "stages",
    "model_fingerprint": "stages",
    "quantize_towers_for_target": "stages",
    "WorkDir": "workdir",
    "stage_key": "workdir",
    "toolchain_versions": "bundle",
    "write_bundle": "bundle",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    # Lazy, so that the torch-free modules (vledge.compress.bundle, used by `vledge labels` on a device)
    # import without the pipeline, which needs torch.
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f"vledge.compress.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'vledge.compress' has no attribute {name!r}")
