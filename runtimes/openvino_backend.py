"""OpenVINO backend: each tower compiled once for CPU, GPU or NPU; one infer request per thread."""

from __future__ import annotations

import importlib.util
import threading
from typing import Sequence

import numpy as np

from vledge.bundle_files import openvino_weights
from vledge.errors import BackendUnavailableError, BundleError, ConfigError
from vledge.runtimes.base import Port, Runtime, as_float32, backend

# Devices that compile only fixed input shapes.
STATIC_ONLY = {"NPU"}
# How an ONNX graph's tensor names a file of external data (StringStringEntryProto key "location"):
# OpenVINO reads ONNX from memory but resolves such files on disk, so a graph that has them is refused.
_ONNX_EXTERNAL_DATA = b"\x0a\x08location"


def normalise_available(devices: Sequence[str]) -> list[str]:
    """OpenVINO device names without their index ("GPU.1" -> "GPU"), unique, in order."""
    return list(dict.fromkeys(d.split(".")[0].upper() for d in devices))


def openvino_device(device: str, available_devices: Sequence[str]) -> str:
    """The OpenVINO device name for a placement device (``"npu"`` -> ``"NPU"``), if OpenVINO sees it."""
    name = device.upper()
    # OpenVINO numbers devices of a kind ("GPU.0", "GPU.1"); the bare kind name addresses the first.
    if any(d.upper().split(".")[0] == name for d in available_devices):
        return name
    raise BackendUnavailableError(
        f"OpenVINO sees no {name} device (it has: {', '.join(available_devices) or 'none'}); "
        f"to use it: {OpenVinoRuntime.install_hint(name)}"
    )


@backend
class OpenVinoRuntime(Runtime):
    """Options: ``threads`` (CPU inference threads), ``exact`` (f32 inference: this CPU runs bf16 by
    default, too coarse for parity checks), ``static_batch`` (fix a dynamic bundle's batch, and its
    text length to the tokenizer's max length; always done on an NPU, with batch 1 unless given).
    A compiled model is shared; each thread gets its own infer request."""

    name = "openvino"
    addressable = ("CPU", "GPU", "NPU")
    reads = frozenset({"onnx", "openvino"})
    extra = "openvino"
    device_hints = {"GPU": "the Intel GPU driver", "NPU": "the Intel NPU driver"}
    option_names = frozenset({"threads", "exact", "static_batch"})

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def devices(cls) -> list[str]:
        import openvino as ov

        return normalise_available(ov.Core().available_devices)

    def __init__(self, bundle_dir, manifest, device, options, strict=False, files=None):
        super().__init__(bundle_dir, manifest, device, options, strict, files)
        import openvino as ov

        self._ov_version, self._tensor = ov.get_version(), ov.Tensor
        core = ov.Core()
        self.device = openvino_device(device, normalise_available(core.available_devices))
        config = {}
        if self.options.get("exact"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if self.options.get("threads") and self.device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        self._compiled = {}
        for kind in manifest.towers:
            self._compiled[kind] = self._compile(ov, core, kind, config)
            self._built(kind)
        self._done_reading()
        self._inputs = {kind: len(compiled.inputs) for kind, compiled in self._compiled.items()}
        self._local = threading.local()

    def _compile(self, ov, core, kind: str, config: dict):
        """The tower compiled for this device; the model read (over the bundle's bytes) goes with this call."""
        file, _ = self._choose_tower(kind, on_cpu=self.device == "CPU")
        model = self._read(ov, core, kind, file)
        try:
            if model.is_dynamic() and (self.device in STATIC_ONLY or self.options.get("static_batch")):
                model.reshape(self._static_shapes(kind))
            return core.compile_model(model, self.device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError or its own OVError subclasses
            raise BundleError(f"OpenVINO cannot compile {file.rsplit('/', 1)[-1]} for {self.device}: {exc}") from None

    def _read(self, ov, core, kind: str, file: str):
        """The tower's model from the bundle's bytes: an IR's .xml text and .bin weights, or an ONNX graph."""
        name = file.rsplit("/", 1)[-1]
        graph = self._bytes(file)
        try:
            if self.manifest.towers[kind].format == "onnx":
                if _ONNX_EXTERNAL_DATA in graph:
                    raise BundleError(
                        f"{name} keeps its weights in external data files, which OpenVINO would read from disk "
                        "unchecked; run this bundle with backend='onnxruntime'"
                    )
                return core.read_model(graph)
            weights = np.frombuffer(self._bytes(openvino_weights(file)), dtype=np.uint8)
            return core.read_model(graph.decode("utf-8"), ov.Tensor(weights))
        except BundleError:
            raise
        except Exception as exc:  # RuntimeError or OpenVINO's own errors; UnicodeDecodeError for a binary .xml
            raise BundleError(f"OpenVINO cannot compile {name} for {self.device}: {exc}") from None

    def ports(self, kind: str) -> tuple[list[Port], list[Port]]:
        self.check_kind(kind)
        compiled = self._compiled[kind]

        listed = {t.name for t in self.manifest.towers[kind].inputs + self.manifest.towers[kind].outputs}

        def describe(ports) -> list[Port]:
            out = []
            for port in ports:
                # A port can carry several tensor names (NNCF's graphs do); the manifest's is one of them.
                names = sorted(port.get_names() & listed) or [port.get_any_name()]
                shape = port.get_partial_shape()
                dims = None if shape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in shape]
                out.append(Port(names[0], np.dtype(port.get_element_type().to_dtype()).name, dims))
            return out

        return describe(compiled.inputs), describe(compiled.outputs)

    def _static_shapes(self, kind: str) -> dict[str, list[int]]:
        batch = int(self.options.get("static_batch") or 1)
        seq = self.manifest.tokenizer.max_length
        fixed = {}
        for tensor in self.manifest.towers[kind].inputs:
            dims = [batch if i == 0 else seq for i, _ in enumerate(tensor.shape)]
            fixed[tensor.name] = [d if isinstance(d, int) else dims[i] for i, d in enumerate(tensor.shape)]
        return fixed

    def input_shapes(self, kind: str) -> dict[str, list]:
        self.check_kind(kind)
        shapes = {}
        for port in self._compiled[kind].inputs:
            shape = port.get_partial_shape()
            shapes[port.get_any_name()] = [d.get_length() if d.is_static else "dynamic" for d in shape]
        return shapes

    def _request(self, kind: str):
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if kind not in requests:
            requests[kind] = self._compiled[kind].create_infer_request()
        return requests[kind]

    def run(self, kind: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.check_kind(kind)
        if len(feeds) != self._inputs[kind]:
            raise ConfigError(f"the {kind} tower takes {self._inputs[kind]} inputs, got {sorted(feeds)}")
        request = self._request(kind)
        # Tensors over the arrays, no copy, then a bare infer(): 11-24% less time per batch-1 call than
        # infer(feeds) on the demo student's towers, timed side by side in one process. OpenVINO shares only
        # writable C-ordered memory, so other arrays are copied first; a Tensor does not keep its array
        # alive, so ``arrays`` holds them until the inference is over, and every input is set on every call.
        arrays = [(name, np.require(array, requirements=("C", "W"))) for name, array in feeds.items()]
        for name, array in arrays:
            request.set_tensor(name, self._tensor(array, shared_memory=True))
        request.infer()
        # The output tensor's memory is reused by the next inference: copy it out.
        return as_float32(request.get_output_tensor(0).data).copy()

    def info(self) -> dict:
        precision = {
            kind: c.get_property("INFERENCE_PRECISION_HINT").get_type_name() for kind, c in self._compiled.items()
        } if self.device == "CPU" else {}
        return {**super().info(), "openvino": self._ov_version, "inference_precision": precision}
