"""The stage functions `compress.pipeline` runs; each also works on its own from Python."""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vledge.bundle import TowerSpec
from vledge.compress.config import CompressConfig
from vledge.compress.workdir import WorkDir
from vledge.targets import get_target

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-3  # max abs difference of exported FP32 towers to PyTorch; a miss warns and is recorded
KINDS = ("image", "text")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_model(model, role: str = "") -> str:
    towers = f"{model.image_tower.config['arch']} + {model.text_tower.config['arch']}"
    return f"{role + ' ' if role else ''}{towers}, {count_parameters(model) / 1e6:.2f}M params".strip()


def model_fingerprint(model) -> str:
    """sha256 of the weights and the tokenizer: the teacher's identity for provenance and resume."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(model.tokenizer.backend.to_str().encode())
    return digest.hexdigest()


def load_teacher_stage(teacher, adapter=None, allow_pickle: bool = False):
    from vledge.models import load_teacher

    model = load_teacher(teacher, adapter=adapter, allow_pickle=allow_pickle)
    return model, model_fingerprint(model)


def _finished(work: WorkDir | None, stage: str, key: str) -> dict | None:
    """The record of a finished stage, as the main process finds it; the other ranks get {} or None."""
    from vledge.train import distributed

    record = work.finished(stage, key) if work is not None and distributed.is_main() else None
    return (record or {}) if distributed.broadcast_flag(record is not None) else None


def teacher_cache_for(teacher, data, student, distill_config, config: CompressConfig, teacher_id: str | None = None):
    """The teacher's outputs for one distillation, from ``config.cache_dir`` and filled ahead; None without one."""
    if not config.cache_dir:
        return None
    from vledge.compress.distill import split_indices
    from vledge.compress.teacher_cache import TeacherCache

    cache = TeacherCache(config.cache_dir, teacher, data, spec=student.preprocess, teacher_id=teacher_id,
                         batch_size=distill_config.batch_size)
    cache.build(np.concatenate(split_indices(len(data), distill_config)))
    return cache


def _distill_with_cache(student, teacher, data, distill_config, config: CompressConfig, teacher_id: str | None):
    from vledge.compress.distill import distill

    cache = teacher_cache_for(teacher, data, student, distill_config, config, teacher_id)
    report = distill(student, teacher, data, distill_config, teacher_forward=cache)
    if cache is None:
        return report, ""
    cache.close()
    return report, f"; teacher cache: {cache.stats.summary()}"


def distilled_student(teacher, train_data, config: CompressConfig, work: WorkDir | None, key: str, *,
                      teacher_id: str | None = None):
    """Build the student and distil it, or reuse the one a previous run finished with the same key.

    Under torchrun every rank distils; only the main one (``work`` is None on the others) writes.
    """
    from vledge.compress.students import TEACHER, build_student, default_student
    from vledge.models import load_dual_encoder, save_dual_encoder
    from vledge.train import distributed

    name = config.student or default_student(teacher)
    if name == TEACHER:
        # Pruning changes its student in place, and the gate still needs the teacher as it was.
        student = copy.deepcopy(teacher) if config.prune.ratio > 0 else teacher
        return student, {"summary": f"student teacher ({describe_model(teacher)}): its own towers, no distillation",
                         "student": TEACHER}, False
    done = _finished(work, "distill", key)
    if done is not None:
        main = distributed.is_main()
        student = load_dual_encoder(work.path("distill") / "model") if main else build_student(name, teacher, seed=config.seed)
        distributed.broadcast_module(student)  # a later recovery distillation needs it on every rank
        return student, done, True
    student = build_student(name, teacher, seed=config.seed)
    report, cached = _distill_with_cache(student, teacher, train_data, config.distill, config, teacher_id)
    record = {"summary": f"student {name} ({describe_model(student)}): {report.summary()}{cached}", "student": name,
              "report": report.to_dict()}
    if distributed.is_main():
        folder = work.start("distill")
        save_dual_encoder(student, folder / "model")
        work.finish("distill", key, record)
    return student, record, False


def pruned_student(student, teacher, train_data, config: CompressConfig, work: WorkDir | None, key: str, *,
                   teacher_id: str | None = None):
    """Prune structurally, then a short recovery distillation; reused on resume like `distilled_student`."""
    from vledge.compress.prune import prune_
    from vledge.models import load_dual_encoder, save_dual_encoder
    from vledge.train import distributed

    done = _finished(work, "prune", key)
    if done is not None:
        return (load_dual_encoder(work.path("prune") / "model") if distributed.is_main() else student), done, True
    pruned = prune_(student, config.prune)
    recovery, cached = _distill_with_cache(student, teacher, train_data, config.recovery, config, teacher_id)
    record = {"summary": f"{pruned.summary()}; recovery: {recovery.summary()}{cached}", "prune": pruned.to_dict(),
              "recovery": recovery.to_dict()}
    if distributed.is_main():
        folder = work.start("prune")
        save_dual_encoder(student, folder / "model")
        work.finish("prune", key, record)
    return student, record, False


@dataclass
class Exported:
    paths: dict[str, Path]
    specs: dict[str, TowerSpec]
    parity: dict[str, float]
    static_batch: int | None
    static_seq: int | None

    @property
    def summary(self) -> str:
        shapes = "static" if self.static_batch else "dynamic batch"
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.parity.items())
        return f"ONNX opset 17, {shapes}; parity to PyTorch (max abs) {diffs}"


def _real_inputs(student, data, kind: str, batch: int, static_seq: int | None):
    import torch

    sample = data.batch(range(min(batch, len(data))), student.preprocess)
    if kind == "image":
        return (torch.from_numpy(sample.pixels),)
    ids, mask = student.tokenizer(sample.captions, pad_to_max=static_seq is not None)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def export_towers(student, held_out, config: CompressConfig, folder: Path) -> Exported:
    """Each tower to its own FP32 ONNX file, checked against PyTorch on real held-out inputs."""
    from vledge.compress.export import export_onnx, onnx_parity

    static = get_target(config.target).static_shapes
    batch = (config.static_batch or 1) if static else None
    seq = student.tokenizer.spec.max_length if static else None
    paths, specs, parity = {}, {}, {}
    for kind in KINDS:
        paths[kind] = folder / f"{kind}_encoder.onnx"
        specs[kind] = export_onnx(student, kind, paths[kind], static_batch=batch, static_seq=seq)
        parity[kind] = onnx_parity(student, kind, paths[kind], _real_inputs(student, held_out, kind, batch or 8, seq))
        if parity[kind] > PARITY_TOLERANCE:
            log.warning("export: %s tower differs from PyTorch by %.2e (tolerance %.0e)", kind, parity[kind], PARITY_TOLERANCE)
    return Exported(paths, specs, parity, batch, seq)


@dataclass
class Quantized:
    towers: dict[str, tuple[TowerSpec, list[Path]]]
    summary: str


def tower_files(folder: Path, spec: TowerSpec) -> list[Path]:
    """The files that make one tower and its fallback: each an .onnx, or an OpenVINO .xml with its .bin."""
    paths = [folder / name for name in spec.files]
    return [f for p in paths for f in ([p, p.with_suffix(".bin")] if spec.format == "openvino" else [p])]


def quantize_towers_for_target(student, train_data, exported: Exported, config: CompressConfig, folder: Path) -> Quantized:
    from vledge.compress.quantize import CalibrationData, quantize

    scheme = config.quantize.scheme
    calibration = CalibrationData.from_dataset(student, train_data, n=config.quantize.calibration_samples, seed=config.seed)
    towers = {}
    for kind in KINDS:
        spec = quantize(exported.paths[kind], kind, config.quantize, calibration, folder)
        towers[kind] = (spec, tower_files(folder, spec))
    methods = ", ".join(f"{k} {s.precision} {s.quantization.get('method', '')}".rstrip() for k, (s, _) in towers.items())
    return Quantized(towers, f"{scheme}: {methods}")


def fp32_tower(exported: Exported, kind: str, config: CompressConfig, folder: Path) -> tuple[TowerSpec, list[Path]]:
    """The unquantized tower in the target's format: the verify gate's fallback for an offending tower."""
    if get_target(config.target).export_format == "openvino":
        from vledge.compress.openvino_export import export_openvino

        spec = export_openvino(exported.paths[kind], kind, folder / f"{kind}_encoder.xml",
                               static_batch=exported.static_batch, static_seq=exported.static_seq)
        return spec, tower_files(folder, spec)
    return exported.specs[kind], [exported.paths[kind]]
