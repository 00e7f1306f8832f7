"""The distil stage: a frozen teacher's embedding space distilled into a student by the training loop.

``distill(student, teacher, data, DistillConfig(...))`` trains the student in place; a
:class:`TeacherCache` serves the teacher's outputs from disk instead of running it. Importing
:mod:`vledge.compress.distil.config` alone needs no torch.
"""

__all__ = ["CacheStats", "DistillConfig", "DistillReport", "TeacherCache", "TeacherOutputs", "distill", "split_indices"]

_HOMES = {
    "DistillConfig": "config", "DistillReport": "run", "distill": "run", "TeacherOutputs": "teacher",
    "split_indices": "held_out", "TeacherCache": "cache", "CacheStats": "cache_files",
}


def __getattr__(name):
    # Lazy, so that the config (read by the torch-free CompressConfig) imports without torch.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"vledge.compress.distil.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'vledge.compress.distil' has no attribute {name!r}")
