"""Stage 4, export, as the pipeline runs it: both towers to FP32 ONNX, checked against PyTorch on real
held-out inputs; and the FP32 tower in the target's own format, which the verify gate falls back to."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from vledge.bundle import TowerSpec
from vledge.errors import ConfigError
from vledge.targets import FORMATS, TargetSpec

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-3  # max abs difference of exported FP32 towers to PyTorch; a miss warns and is recorded
KINDS = ("image", "text")


@dataclass(frozen=True)
class ExportConfig:
    """How the towers are exported.

    format: the files the target ships ("onnx" or "openvino"); quantization starts from the ONNX files
        either way, and the gate's FP32 fallback is written in this format.
    static_batch: every input's fixed batch (static-shape targets), None for dynamic batch and sequence.
    """

    format: str = "onnx"
    static_batch: int | None = None
    opset: int = 17

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"ExportConfig.format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.static_batch is not None and self.static_batch < 1:
            raise ConfigError(f"ExportConfig.static_batch must be positive or None, got {self.static_batch!r}")

    @classmethod
    def for_target(cls, target: TargetSpec, static_batch: int | None = None) -> "ExportConfig":
        """The target's format and shapes; ``static_batch`` (a recipe's) replaces the target's own batch."""
        batch = (static_batch or target.static_batch) if target.static_shapes else None
        return cls(format=target.export_format, static_batch=batch)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExportConfig":
        return cls(**data)


@dataclass
class Exported:
    paths: dict[str, Path]
    specs: dict[str, TowerSpec]
    parity: dict[str, float]
    config: ExportConfig
    static_seq: int | None

    @property
    def static_batch(self) -> int | None:
        return self.config.static_batch

    @property
    def summary(self) -> str:
        shapes = "static" if self.static_batch else "dynamic batch"
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.parity.items())
        return f"ONNX opset {self.config.opset}, {shapes}; parity to PyTorch (max abs) {diffs}"


def _real_inputs(model, data, kind: str, batch: int, static_seq: int | None):
    import torch

    sample = data.batch(range(min(batch, len(data))), model.preprocess)
    if kind == "image":
        return (torch.from_numpy(sample.pixels),)
    ids, mask = model.tokenizer(sample.captions, pad_to_max=static_seq is not None)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def export_towers(model, held_out, folder: Path, config: ExportConfig = ExportConfig()) -> Exported:
    """Each tower of ``model`` to its own FP32 ONNX file in ``folder``, checked against PyTorch on
    ``held_out`` inputs (a miss over ``PARITY_TOLERANCE`` warns and is recorded)."""
    from vledge.compress.export.to_onnx import export_onnx, onnx_parity

    batch = config.static_batch
    seq = model.tokenizer.spec.max_length if batch else None
    paths, specs, parity = {}, {}, {}
    for kind in KINDS:
        paths[kind] = folder / f"{kind}_encoder.onnx"
        specs[kind] = export_onnx(model, kind, paths[kind], static_batch=batch, static_seq=seq, opset=config.opset)
        parity[kind] = onnx_parity(model, kind, paths[kind], _real_inputs(model, held_out, kind, batch or 8, seq))
        if parity[kind] > PARITY_TOLERANCE:
            log.warning("export: %s tower differs from PyTorch by %.2e (tolerance %.0e)", kind, parity[kind], PARITY_TOLERANCE)
    return Exported(paths, specs, parity, config, seq)


def tower_files(folder: Path, spec: TowerSpec) -> list[Path]:
    """The files that make one tower and its fallback: each an .onnx, or an OpenVINO .xml with its .bin."""
    paths = [folder / name for name in spec.files]
    return [f for p in paths for f in ([p, p.with_suffix(".bin")] if spec.format == "openvino" else [p])]


def fp32_tower(exported: Exported, kind: str, folder: Path) -> tuple[TowerSpec, list[Path]]:
    """The unquantized tower in the export's format: the verify gate's fallback for an offending tower."""
    if exported.config.format == "openvino":
        from vledge.compress.export.to_openvino import export_openvino

        spec = export_openvino(exported.paths[kind], kind, folder / f"{kind}_encoder.xml",
                               static_batch=exported.static_batch, static_seq=exported.static_seq)
        return spec, tower_files(folder, spec)
    return exported.specs[kind], [exported.paths[kind]]
