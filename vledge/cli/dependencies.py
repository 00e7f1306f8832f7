"""Which extra provides each optional package, so a command that reaches one not installed ends in one
line saying what to install instead of a ``ModuleNotFoundError`` traceback (a device install has no torch)."""

from __future__ import annotations

from vledge.errors import MissingDependencyError

EXTRA_OF = {
    **dict.fromkeys(("torch", "torchvision", "transformers", "safetensors", "optimum", "onnx", "onnxscript", "nncf",
                     "peft", "accelerate", "torch_pruning"), "compress"),
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "matplotlib": "bench",
    "psutil": "bench",
    "cryptography": "sign",
    "av": "video",
    **dict.fromkeys(("starlette", "uvicorn", "multipart", "python_multipart", "prometheus_client"), "serve"),
    "sklearn": "digits",
}


def missing_dependency(exc: ModuleNotFoundError, command: str) -> MissingDependencyError | None:
    """The one-line error for a missing optional package, or None when ``exc`` is not about one (a bug)."""
    package = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(package)
    if extra is None:
        return None
    return MissingDependencyError(
        f"{package} is not installed and `vledge {command}` needs it here; install it with: pip install \"vledge[{extra}]\""
    )
