"""The benchmark's rows: which variants are measured, and how each one's bundle is made.

Rows (``vledge.bench.variants`` puts them in order): the teacher in PyTorch FP32
(``vledge.load(teacher, backend="torch")``) and as an FP32 ONNX bundle; for a Hugging Face CLIP teacher, the peer rows (``vledge.bench.peers``); the
student as FP32 ONNX on ONNX Runtime, INT8 on ONNX Runtime (target ``cpu``), FP32 on OpenVINO (f32
inference) and INT8 on OpenVINO (target ``intel-cpu``, NNCF); then every bundle given as it is.

Where the student comes from (``student_source``):
- a checkpoint folder (``--student``): used as is; a compress work folder (``OUT.work``) is read
  from its ``prune/model`` or ``distill/model``;
- otherwise it is distilled from the teacher by the compress pipeline's own distillation stage
  (``vledge.compress.distilled_student``, the cpu target's default recipe) into the work folder,
  where a later run with the same teacher and settings finds and reuses it.
Every built variant is a bundle written with ``vledge.compress``'s public stage functions
(``export_towers``, ``fp32_tower``, ``quantize_towers_for_target``, ``compact_towers``, ``write_bundle``),
without the verify gate's recovery; to measure a bundle exactly as ``vledge compress`` shipped it, pass the bundle.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vledge.bench.once import Once

log = logging.getLogger(__name__)

TEACHER_TORCH = "teacher PyTorch FP32"
TEACHER_ONNX = "teacher ONNX FP32 (ORT)"
STUDENT_FP32_ORT = "student FP32 (ORT)"
STUDENT_INT8_ORT = "student INT8 (ORT)"
STUDENT_FP32_OV = "student FP32 (OpenVINO)"
STUDENT_INT8_OV = "student INT8 (OpenVINO)"
KINDS = ("image", "text")


@dataclass
class Variant:
    """One row: what the worker opens (``path``, made by ``build`` when needed) and its static facts.

    ``opener``: "edge" (``vledge.load``) or "peer" (``vledge.bench.peer_model``). ``size_of``: the
    folder whose bytes are the row's size, relative to ``path`` ("" for ``path`` itself)."""

    name: str
    key: str  # short name for selecting rows (``--rows``)
    role: str  # "teacher" | "peer" | "student" | "bundle"
    precision: str
    path: Path | None = None
    build: Callable[[], Path] | None = None
    backend: str | None = None  # passed to vledge.load; None: the bundle's own choice
    options: dict = field(default_factory=dict)
    params: Callable[[], int | None] | None = None
    macs_from: Callable[[], Path | None] | None = None  # a bundle whose ONNX towers the MACs are counted on
    model: Callable[[], str | None] | None = None  # the architecture, for the row's ``model`` column
    opener: str = "edge"
    size_of: str = ""


def architecture(model) -> str:
    """A dual encoder's towers in words: ``clip-vision 4L/256d + clip-text 4L/256d``, ``resnet18 + bert``."""
    parts = []
    for tower in (model.image_tower, model.text_tower):
        config = getattr(tower, "config", {}) or {}
        hf = config.get("hf_config") or {}
        detail = f" {hf['num_hidden_layers']}L/{hf['hidden_size']}d" if "num_hidden_layers" in hf else ""
        parts.append(f"{config.get('arch', type(tower).__name__)}{detail}")
    return " + ".join(parts)


class Workshop:
    """Loads the teacher, finds or distils the student, and builds each variant's bundle in ``work``."""

    def __init__(self, teacher: str | Path, *, data: str, data_dir: str | None, split: str, work: Path,
                 student: str | Path | None = None, distill: dict | None = None, seed: int = 0):
        self.teacher_path = Path(teacher)
        self.data, self.data_dir, self.split = data, data_dir, split
        self.work = Path(work)
        self.student_source = Path(student) if student else None
        self.distill_overrides = dict(distill or {})
        self.seed = seed
        self.student_description = ""
        self.student_name = ""
        self.teacher = Once(self._load_teacher)
        self.train_data = Once(lambda: self._dataset("train"))
        self.eval_data = Once(lambda: self._dataset(self.split))
        self.student = Once(self._student)
        self.exported = Once(self._export_student)

    # -- models and data ---------------------------------------------------------------------------
    def _load_teacher(self):
        from vledge.models import load_teacher

        return load_teacher(self.teacher_path)

    def _dataset(self, split: str):
        from vledge.data import load_dataset

        return load_dataset(self.data, split, self.data_dir)

    def config(self, target: str):
        from vledge.compress import resolve_config

        overrides = {"data": self.data, "data_dir": self.data_dir, "seed": self.seed,
                     "distill": self.distill_overrides or None}
        return resolve_config(target, overrides=overrides)

    def _student(self):
        from vledge.models import load_dual_encoder, load_teacher

        source = self.student_source
        if source is not None:
            for stage in ("prune", "distill"):  # a compress work folder: its last finished model
                if (source / stage / "model").is_dir():
                    self.student_description = f"{source / stage / 'model'} (compress work folder)"
                    return load_dual_encoder(source / stage / "model")
            self.student_description = f"{source} (--student)"
            return load_teacher(source)
        return self._distil()

    def _distil(self):
        from vledge.compress import WorkDir, distilled_student, model_fingerprint, stage_key

        teacher = self.teacher()
        config = self.config("cpu")
        key = stage_key(model_fingerprint(teacher), config.data, config.student, config.distill.to_dict(), config.seed)
        log.info("bench: the student: reused from %s if an earlier run distilled it with these settings, else "
                 "distilled now (compress's distill stage, %s epochs (None: the default plan) of up to %s images)", self.work / "student",
                 config.distill.epochs, config.distill.max_samples)
        student, record, reused = distilled_student(teacher, self.train_data(), config.distill, student=config.student,
                                                    seed=config.seed, work=WorkDir(self.work / "student"), key=key)
        self.student_name = record.get("student", "")
        self.student_description = f"{record['summary']}{' (reused from an earlier run)' if reused else ''}"
        return student

    def student_model(self) -> str:
        arch = architecture(self.student())
        return f"{self.student_name}: {arch}" if self.student_name else arch

    def _export_student(self):
        from vledge.compress import export_towers

        return export_towers(self.student(), self.eval_data(), self._fresh("student-onnx"),
                             self.config("cpu").export_config())

    def _fresh(self, name: str) -> Path:
        import shutil

        folder = self.work / "build" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    # -- bundles ---------------------------------------------------------------------------------
    def _write(self, name: str, model, towers: dict, target: str) -> Path:
        from vledge.compress import bundle_precision, compact_towers, write_bundle

        towers, _ = compact_towers(towers, self._fresh(f"{name}-compact"))  # ONNX names as compress ships them
        return write_bundle(
            self.work / "bundles" / name, towers=towers, tokenizer=model.tokenizer, preprocess=model.preprocess,
            target=target, precision=bundle_precision(towers), embed_dim=model.embed_dim,
            logit_scale=math.exp(model.logit_scale.item()), config={"bench": name}, metrics={},
            provenance={"bench": name, "teacher": str(self.teacher_path), "model": architecture(model)},
            overwrite=True,
        )

    def _fp32_bundle(self, name: str, model, exported, target: str) -> Path:
        """FP32 towers in ``target``'s format (``exported`` is ONNX; OpenVINO targets convert it)."""
        from vledge.compress import export_openvino, fp32_tower, tower_files
        from vledge.targets import get_target

        folder = self._fresh(f"{name}-towers")
        if get_target(target).export_format != "openvino":
            towers = {kind: fp32_tower(exported, kind, folder) for kind in KINDS}
        else:
            specs = {kind: export_openvino(exported.paths[kind], kind, folder / f"{kind}_encoder.xml") for kind in KINDS}
            towers = {kind: (spec, tower_files(folder, spec)) for kind, spec in specs.items()}
        return self._write(name, model, towers, target)

    def teacher_onnx(self) -> Path:
        from vledge.compress import export_towers

        teacher = self.teacher()
        exported = export_towers(teacher, self.eval_data(), self._fresh("teacher-onnx"), self.config("cpu").export_config())
        return self._fp32_bundle("teacher-onnx-fp32", teacher, exported, "cpu")

    def student_fp32_onnx(self) -> Path:
        return self._fp32_bundle("student-onnx-fp32", self.student(), self.exported(), "cpu")

    def student_fp32_openvino(self) -> Path:
        return self._fp32_bundle("student-openvino-fp32", self.student(), self.exported(), "intel-cpu")

    def student_int8(self, target: str) -> Path:
        from vledge.compress import quantized_towers

        config = self.config(target)
        quantized = quantized_towers(self.student(), self.train_data(), self.exported(), self._fresh(f"student-{target}"),
                                     config.quantize, config.seed)
        return self._write(f"student-{target}-int8", self.student(), quantized.towers, target)


def bundle_params(path: Path) -> int | None:
    """A bundle's parameter count: as its compress run recorded it, else counted in its ONNX towers."""
    from vledge.bench.measure import count_onnx_parameters
    from vledge.bundle import safe_join
    from vledge.bundle_files import read_manifest

    manifest = read_manifest(path, verify=False)
    if manifest.metrics.get("student_params"):
        return int(manifest.metrics["student_params"])
    if any(t.format != "onnx" for t in manifest.towers.values()):
        return None
    return sum(count_onnx_parameters(safe_join(path, t.file)) for t in manifest.towers.values())


def bundle_model(path: Path) -> str | None:
    """The architecture a bundle's manifest records (its student's name for a ``vledge compress`` bundle)."""
    from vledge.bundle_files import read_manifest

    manifest = read_manifest(path, verify=False)
    provenance = manifest.provenance
    named = provenance.get("model") or provenance.get("student") or manifest.config.get("student")
    if named == "teacher":  # vledge compress --student teacher
        teacher = provenance.get("teacher")
        kind = teacher.get("kind") if isinstance(teacher, dict) else None
        return f"the teacher's own towers{f' ({kind})' if kind else ''}"
    return str(named) if named else None


def built_in_rows(shop: Workshop, teacher_onnx: Once) -> list[Variant]:
    """The teacher's and the student's rows (peers come from ``vledge.bench.peers``)."""
    from vledge.compress import count_parameters

    student_onnx = Once(shop.student_fp32_onnx)
    teacher = dict(params=lambda: count_parameters(shop.teacher()), model=lambda: architecture(shop.teacher()))
    student = dict(params=lambda: count_parameters(shop.student()), model=shop.student_model)
    return [
        Variant(TEACHER_TORCH, "teacher-torch", "teacher", "fp32", path=shop.teacher_path, backend="torch",
                macs_from=teacher_onnx, **teacher),
        Variant(TEACHER_ONNX, "teacher-onnx", "teacher", "fp32", build=teacher_onnx, **teacher),
        Variant(STUDENT_FP32_ORT, "student-fp32-ort", "student", "fp32", build=student_onnx, **student),
        Variant(STUDENT_INT8_ORT, "student-int8-ort", "student", "int8", build=lambda: shop.student_int8("cpu"),
                **student),
        Variant(STUDENT_FP32_OV, "student-fp32-openvino", "student", "fp32", build=shop.student_fp32_openvino,
                options={"exact": True}, macs_from=student_onnx, **student),
        Variant(STUDENT_INT8_OV, "student-int8-openvino", "student", "int8",
                build=lambda: shop.student_int8("intel-cpu"), macs_from=student_onnx, **student),
    ]
