"""ONNX Runtime backend: one InferenceSession per tower on CPU, CUDA or TensorRT."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from vledge.errors import BackendUnavailableError, BundleError, ConfigError
from vledge.runtimes.base import Port, Runtime, as_float32, backend

log = logging.getLogger(__name__)

# The execution providers asked for on each device, best first.
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_PROVIDER_DEVICE = {providers[0]: device for device, providers in PROVIDERS.items()}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool"}
# A model built from bytes reads external data from the working directory unless it is given a table of
# in-memory files; a table with only this entry (no bundle path can be named so) makes any reference fail.
_NO_EXTERNAL_DATA = "\0no external data"
# CPU towers smaller than this run on one intra-op thread unless ``threads`` is given: with idle threads
# asleep (no spinning), waking a second one for each operator of a tiny tower costs more than it gives. On the
# 2-core AMD EPYC, one thread against two: a 0.36 MB CLIP student 0.19 / 0.46 ms against 0.30 / 0.89 ms (image
# batch 1 / 8), the demo student 91 against 176 us; the 8.7 MB camera ViT student's image tower gains from two
# at batch 8 (4.8 / 30.8 ms on one thread, 5.0 / 23.6 ms on two).
SMALL_TOWER_BYTES = 4 << 20


def ort_providers(device: str, available_providers: Sequence[str]) -> list[str]:
    """ONNX Runtime execution providers for a device, best first, keeping only those installed."""
    if device not in PROVIDERS:
        raise ConfigError(f"ONNX Runtime has no device {device!r}; choose one of {sorted(PROVIDERS)}")
    wanted = PROVIDERS[device]
    if wanted[0] not in available_providers:
        raise BackendUnavailableError(
            f"ONNX Runtime here has no {wanted[0]} (it has: {', '.join(available_providers)}); "
            f"to use it: {OnnxRuntime.install_hint(device)}"
        )
    return [p for p in wanted if p in available_providers]


def release_model_bytes(session) -> None:
    """Let go of the graph's bytes that ORT's Python session keeps (a tower's file size, for the life of the
    session) only to rebuild itself when a run fails on its execution provider. That rebuild is switched
    off: a provider failing mid-run raises rather than moving to the CPU unannounced."""
    session.disable_fallback()
    session._model_bytes = None


@backend
class OnnxRuntime(Runtime):
    """Options: ``threads`` (intra-op threads; default ONNX Runtime's, or 1 for a tower under
    ``SMALL_TOWER_BYTES`` on the CPU), ``trt_cache_dir`` (TensorRT
    engine cache; default ``<bundle>/.trt_cache``). ``InferenceSession.run`` is thread-safe."""

    name = "onnxruntime"
    addressable = tuple(PROVIDERS)
    reads = frozenset({"onnx"})
    extra = "onnx"
    device_extras = {"cuda": "gpu", "tensorrt": "gpu"}
    device_hints = {
        "cuda": "onnxruntime-gpu in place of onnxruntime, and the CUDA runtime",
        "tensorrt": "onnxruntime-gpu in place of onnxruntime, and TensorRT",
    }
    option_names = frozenset({"threads", "trt_cache_dir"})

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    @classmethod
    def devices(cls) -> list[str]:
        import onnxruntime as ort

        return [_PROVIDER_DEVICE[p] for p in ort.get_available_providers() if p in _PROVIDER_DEVICE]

    def __init__(self, bundle_dir, manifest, device, options, strict=False, files=None):
        super().__init__(bundle_dir, manifest, device, options, strict, files)
        import onnxruntime as ort

        self._ort_version = ort.__version__
        names = ort_providers(device, ort.get_available_providers())
        self._sessions, self.tower_threads = {}, {}
        for kind in manifest.towers:
            providers = [self._provider_entry(p, kind) for p in names]
            self._sessions[kind] = self._open(ort, kind, providers)
            self._built(kind)
        self._done_reading()
        # A GPU build lists CUDA even where no GPU or driver is present; the session then runs on CPU.
        used = self._sessions[next(iter(self._sessions))].get_providers()
        if names[0] not in used:
            log.warning("ONNX Runtime could not start %s (running on %s); check the GPU driver", names[0], used[0])
            self.device = _PROVIDER_DEVICE.get(used[0], used[0])
        self.providers = used

    def _provider_entry(self, provider: str, kind: str):
        if provider != "TensorrtExecutionProvider":
            return provider
        return (provider, {
            "trt_fp16_enable": True,
            "trt_int8_enable": self.manifest.towers[kind].precision == "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self._trt_cache_dir()),
        })

    def _trt_cache_dir(self) -> Path:
        folder = Path(self.options.get("trt_cache_dir") or self.bundle_dir / ".trt_cache")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the TensorRT engine cache folder {folder} ({exc}); "
                "pass a writable folder: vledge.load(..., trt_cache_dir=PATH)"
            ) from None
        return folder

    def _open(self, ort, kind: str, providers: list):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
        # Idle threads sleep rather than spin: spinning holds cores that other work on a shared device needs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        file, choice = self._choose_tower(kind, on_cpu=self.device == "cpu")
        threads = self.options.get("threads") or (1 if self._small(file) else None)
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.tower_threads[kind] = threads or "onnxruntime's default"
        if choice.float_qdq:
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        # External data only from the bundle's own (hash-checked) files beside the graph, never from disk.
        beside = self._beside(file) or {_NO_EXTERNAL_DATA: b"\0"}
        opts.add_external_initializers_from_files_in_memory(list(beside), list(beside.values()),
                                                            [len(b) for b in beside.values()])
        try:
            session = ort.InferenceSession(self._bytes(file), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types per failure
            raise BundleError(f"ONNX Runtime cannot open {Path(file).name}: {type(exc).__name__}: {exc}") from None
        release_model_bytes(session)
        return session

    def _small(self, file: str) -> bool:
        """A CPU tower whose graph file is under ``SMALL_TOWER_BYTES`` (vledge writes its weights inside the file)."""
        if self.device != "cpu":
            return False
        return len(self._bytes(file)) < SMALL_TOWER_BYTES

    def ports(self, kind: str) -> tuple[list[Port], list[Port]]:
        self.check_kind(kind)
        session = self._sessions[kind]

        def describe(args) -> list[Port]:
            return [Port(a.name, _ORT_TYPES.get(a.type, a.type),
                         None if a.shape is None else [d if isinstance(d, int) else None for d in a.shape])
                    for a in args]

        return describe(session.get_inputs()), describe(session.get_outputs())

    def run(self, kind: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.check_kind(kind)
        return as_float32(self._sessions[kind].run(None, feeds)[0])

    def info(self) -> dict:
        return {**super().info(), "providers": self.providers, "onnxruntime": self._ort_version,
                "intra_op_threads": dict(self.tower_threads)}
