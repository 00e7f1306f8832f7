"""The targets table: one row per deployment target drives the CLI, validation, docs and benchmarks.

A row says everything the target means: the files it ships, their precision and quantization scheme,
static shapes, the runtime placements to try in order, the pip extra and whether the benchmark covers
it. Adding a target is adding a row; ``vledge targets`` and the README's table are rendered from the
rows (``markdown_table``). Nothing here imports torch or a runtime framework.
"""

from __future__ import annotations

from dataclasses import dataclass

from vledge.errors import ConfigError
from vledge.registry import Registry

FORMATS = {"onnx": ("ONNX", ".onnx"), "openvino": ("OpenVINO IR", ".xml")}  # format -> (name in docs, file suffix)


@dataclass(frozen=True)
class Placement:
    """One link of a fallback chain: a runtime backend on a device."""

    backend: str  # "onnxruntime" | "openvino" | "torch"
    device: str  # "cpu" | "cuda" | "tensorrt" | "GPU" | "NPU"

    def __str__(self) -> str:
        return f"{self.backend}:{self.device}"


@dataclass(frozen=True)
class TargetSpec:
    """One deployment target.

    quantization: the scheme name in the quantizer registry (``vledge.compress.quantize``), None for FP32.
    static_batch: the fixed batch of every input on static-shape targets (NPUs), else None; it is the
        target's layer of the settings (defaults < target < recipe < flags).
    chain: the preferred placement first, then its fallbacks.
    bench: whether ``vledge bench`` measures bundles for this target.
    """

    name: str
    description: str
    export_format: str
    precision: str  # "int8" | "fp16" | "int8+fp16"
    quantization: str | None
    static_shapes: bool
    chain: tuple[Placement, ...]
    extra: str  # the pip extra that holds the preferred runtime
    static_batch: int | None = None
    bench: bool = False

    def __post_init__(self):
        if self.export_format not in FORMATS:
            raise ConfigError(f"target {self.name!r}: export_format must be one of {', '.join(FORMATS)}, got {self.export_format!r}")
        if self.static_shapes != (self.static_batch is not None) or (self.static_batch is not None and self.static_batch < 1):
            raise ConfigError(f"target {self.name!r}: a static-shape target needs a static_batch >= 1, a dynamic one none")
        if not self.chain:
            raise ConfigError(f"target {self.name!r} has no placement to run on")

    @property
    def file_suffix(self) -> str:
        return FORMATS[self.export_format][1]

    def settings(self) -> dict:
        """What this target changes in the defaults of a compress run (``CompressConfig`` fields)."""
        return {"static_batch": self.static_batch} if self.static_batch is not None else {}


TARGETS: Registry[TargetSpec] = Registry("target")

for _spec in (
    TargetSpec(
        name="cpu",
        description="any x86/ARM CPU through ONNX Runtime; static INT8 per tower: image QOperator U8S8, text MatMul and Gather (batch-invariant)",
        export_format="onnx", precision="int8", quantization="ort-cpu", static_shapes=False,
        chain=(Placement("onnxruntime", "cpu"),), extra="onnx", bench=True,
    ),
    TargetSpec(
        name="intel-cpu",
        description="Intel CPU through OpenVINO; NNCF INT8 (mixed preset)",
        export_format="openvino", precision="int8", quantization="nncf", static_shapes=False,
        chain=(Placement("openvino", "CPU"), Placement("onnxruntime", "cpu")), extra="openvino", bench=True,
    ),
    TargetSpec(
        name="intel-npu",
        description="Intel NPU through OpenVINO; static shapes, NNCF symmetric INT8",
        export_format="openvino", precision="int8", quantization="nncf-symmetric", static_shapes=True, static_batch=1,
        chain=(Placement("openvino", "NPU"), Placement("openvino", "CPU")), extra="openvino",
    ),
    TargetSpec(
        name="cuda",
        description="NVIDIA GPU through ONNX Runtime CUDA; FP16 weights, float32 inputs and outputs",
        export_format="onnx", precision="fp16", quantization="fp16", static_shapes=False,
        chain=(Placement("onnxruntime", "cuda"), Placement("onnxruntime", "cpu")), extra="gpu",
    ),
    TargetSpec(
        name="jetson",
        description="NVIDIA Jetson through ONNX Runtime TensorRT (engine cache); INT8 QDQ symmetric per-channel + FP16",
        export_format="onnx", precision="int8+fp16", quantization="ort-tensorrt", static_shapes=False,
        chain=(Placement("onnxruntime", "tensorrt"), Placement("onnxruntime", "cuda"), Placement("onnxruntime", "cpu")),
        extra="gpu",
    ),
):
    TARGETS.register(_spec.name, _spec)


def get_target(name: str) -> TargetSpec:
    """The row named ``name``; an unknown name is a ``ConfigError`` with a "did you mean"."""
    return TARGETS.get(name)


def as_target(target: str | TargetSpec) -> TargetSpec:
    """A target given by name or as its row, as its row: the one lookup at an API boundary."""
    return target if isinstance(target, TargetSpec) else get_target(target)


TABLE_HEADER = ("target", "files", "precision", "scheme", "runs on", "fallback", "install", "bench", "description")


def table_rows() -> list[tuple[str, ...]]:
    """One tuple of cells per target, in ``TABLE_HEADER`` order."""
    rows = []
    for name, spec in TARGETS.items():
        files = FORMATS[spec.export_format][0] + (f", static batch {spec.static_batch}" if spec.static_shapes else "")
        fallback = ", then ".join(str(p) for p in spec.chain[1:]) or "none"
        rows.append((name, files, spec.precision, spec.quantization or "none", str(spec.chain[0]), fallback,
                     f"vledge[{spec.extra}]", "yes" if spec.bench else "no", spec.description))
    return rows


def markdown_table() -> str:
    """The targets table as the docs show it (``vledge targets --markdown``)."""
    lines = [TABLE_HEADER, ("---",) * len(TABLE_HEADER), *table_rows()]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines) + "\n"
