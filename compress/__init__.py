"""The compression pipeline (needs the ``compress`` extra): ``vledge.compress.compress(teacher, out=..., target=...)``.

Importing this package loads nothing heavy; each name below is imported from its room when first used,
so the torch-free rooms (``vledge.compress.bundle``, used by ``vledge labels`` on a device) import without
the pipeline. Stages, in the pipeline's order, each usable alone:

1. ``load_teacher_stage``  2. ``distilled_student``  3. ``prune_`` / ``pruned_student``
4. ``export_towers`` (``export_onnx``, ``export_openvino``)  5. ``quantized_towers``
6. ``verify_bundle`` / ``verify_with_recovery``  7. ``write_bundle`` / ``write_final_bundle``
"""

from __future__ import annotations

import importlib

_FACE = {
    "vledge.compress.pipeline": ("compress",),
    "vledge.compress.report": ("CompressReport", "StageRecord"),
    "vledge.compress.config": ("CompressConfig", "resolve_config"),
    "vledge.compress.workdir": ("WorkDir", "stage_key"),
    "vledge.compress.stages": ("load_teacher_stage", "distilled_student", "quantized_towers", "Quantized"),
    "vledge.compress.prune": ("PruneConfig", "PruneReport", "prune_", "pruned_student"),
    "vledge.compress.export": ("ExportConfig", "Exported", "export_onnx", "export_openvino", "export_towers",
                               "onnx_parity", "fp32_tower", "tower_files", "compact_onnx", "compact_towers"),
    "vledge.compress.verify": ("GateConfig", "Verified", "VerifyReport", "verify_bundle", "verify_with_recovery",
                               "candidate_bundle", "measure_quantized_teacher"),
    "vledge.compress.bundle": ("Probes", "bundle_precision", "make_probes", "toolchain_versions", "write_bundle"),
    "vledge.compress.bundle.package": ("size_metrics", "write_final_bundle"),
    "vledge.models.identity": ("count_parameters", "describe_model", "model_fingerprint"),
}
_HOME = {name: module for module, names in _FACE.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'vledge.compress' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
