"""The targets table: one row per deployment target drives the CLI, validation, docs and benchmarks.

Adding a target is adding a row. Nothing here imports torch or a runtime framework.
"""

from __future__ import annotations

from dataclasses import dataclass

from vledge.registry import Registry


@dataclass(frozen=True)
class Placement:
    """One link of a fallback chain: a runtime backend on a device."""

    backend: str  # "onnxruntime" | "openvino" | "torch"
    device: str  # "cpu" | "cuda" | "tensorrt" | "GPU" | "NPU"

    def __str__(self) -> str:
        return f"{self.backend}:{self.device}"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    export_format: str  # "onnx" | "openvino"
    precision: str  # "int8" | "fp16" | "int8+fp16"
    quantization: str | None  # a quantization scheme name (compress.quantize registry)
    static_shapes: bool
    chain: tuple[Placement, ...]  # preferred placement first, then fallbacks
    extra: str  # the pip extra that holds the preferred runtime

    @property
    def file_suffix(self) -> str:
        return ".xml" if self.export_format == "openvino" else ".onnx"


TARGETS: Registry[TargetSpec] = Registry("target")

for _spec in (
    TargetSpec(
        name="cpu",
        description="any x86/ARM CPU through ONNX Runtime",
        export_format="onnx",
        precision="int8",
        quantization="ort-cpu",
        static_shapes=False,
        chain=(Placement("onnxruntime", "cpu"),),
        extra="onnx",
    ),
    TargetSpec(
        name="intel-cpu",
        description="Intel CPU through OpenVINO (NNCF INT8)",
        export_format="openvino",
        precision="int8",
        quantization="nncf",
        static_shapes=False,
        chain=(Placement("openvino", "CPU"), Placement("onnxruntime", "cpu")),
        extra="openvino",
    ),
    TargetSpec(
        name="intel-npu",
        description="Intel NPU through OpenVINO, static shapes, symmetric INT8",
        export_format="openvino",
        precision="int8",
        quantization="nncf-symmetric",
        static_shapes=True,
        chain=(Placement("openvino", "NPU"), Placement("openvino", "CPU")),
        extra="openvino",
    ),
    TargetSpec(
        name="cuda",
        description="NVIDIA GPU through ONNX Runtime CUDA, FP16",
        export_format="onnx",
        precision="fp16",
        quantization="fp16",
        static_shapes=False,
        chain=(Placement("onnxruntime", "cuda"), Placement("onnxruntime", "cpu")),
        extra="gpu",
    ),
    TargetSpec(
        name="jetson",
        description="NVIDIA Jetson through ONNX Runtime TensorRT, INT8 QDQ + FP16, engine cache",
        export_format="onnx",
        precision="int8+fp16",
        quantization="ort-tensorrt",
        static_shapes=False,
        chain=(
            Placement("onnxruntime", "tensorrt"),
            Placement("onnxruntime", "cuda"),
            Placement("onnxruntime", "cpu"),
        ),
        extra="gpu",
    ),
):
    TARGETS.register(_spec.name, _spec)


def get_target(name: str) -> TargetSpec:
    return TARGETS.get(name)
