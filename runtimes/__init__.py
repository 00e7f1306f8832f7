"""The torch-free edge runtime: ``load`` a bundle (or a checkpoint, for accuracy checks) and run it.

Backends register themselves here; none imports its framework until it is chosen.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from vledge.bundle import MANIFEST, read_manifest, safe_join
from vledge.errors import BackendUnavailableError, BundleError, CheckpointError, ConfigError
from vledge.runtimes import onnxruntime_backend, openvino_backend, torch_backend  # noqa: F401  (registration)
from vledge.runtimes.base import RUNTIMES, Runtime
from vledge.runtimes.model import EdgeModel, LabelSet, read_label_set
from vledge.runtimes.selection import BACKEND_DEVICES, READS, choose_placement, readable_chain
from vledge.targets import TARGETS, Placement
from vledge.text import TextTokenizer

log = logging.getLogger(__name__)

CHECKPOINT_CONFIG = "config.json"


def load(
    path: str | os.PathLike, device: str = "auto", strict: bool = False, backend: str | None = None, **options
) -> EdgeModel:
    """Load a bundle folder (or, with ``backend="torch"``, a checkpoint folder) for inference.

    ``device``: ``"auto"`` (the bundle target's preferred placement, falling back along its chain),
    a device (``"cpu"``, ``"cuda"``, ``"tensorrt"``, ``"GPU"``, ``"NPU"``) or ``"backend:device"``.
    An unreachable device falls back with one logged warning, or raises
    :class:`~vledge.errors.BackendUnavailableError` when ``strict``. ``backend`` limits the choice
    to one of ``"onnxruntime"``, ``"openvino"``, ``"torch"``. ``options`` go to the backend
    (``threads``; ``exact`` for OpenVINO; ``trt_cache_dir`` for TensorRT).

    Every bundle file is checked against its sha256 before any framework opens it.
    """
    start = time.perf_counter()
    root = Path(path)
    if backend is not None:
        RUNTIMES.get(backend)
    is_bundle = (root / MANIFEST).is_file()
    if backend == "torch" or (not is_bundle and (root / CHECKPOINT_CONFIG).is_file()):
        runtime, tokenizer, labels, report = _open_checkpoint(root, device, strict, options)
    else:
        runtime, tokenizer, labels, report = _open_bundle(root, device, strict, backend, options)
    report = {"path": str(root), **report, "load_seconds": round(time.perf_counter() - start, 4)}
    return EdgeModel(runtime, tokenizer, label_set=labels, report=report)


def _open_bundle(root: Path, device: str, strict: bool, backend: str | None, options: dict):
    manifest = read_manifest(root, verify=True)
    if manifest.target not in TARGETS:
        raise BundleError(
            f"{root / MANIFEST} names target {manifest.target!r}, unknown to this vledge "
            f"(knows: {', '.join(TARGETS.names())}); upgrade vledge"
        )
    formats = {t.format for t in manifest.towers.values()}
    chain, unreadable = readable_chain(TARGETS.get(manifest.target).chain, formats)
    if backend is not None:
        chain = [p for p in chain if p.backend == backend] or [Placement(backend, BACKEND_DEVICES[backend][0])]
    wanted_backend = device.split(":", 1)[0] if ":" in device else None
    for name in filter(None, (backend, wanted_backend)):
        RUNTIMES.get(name)  # unknown names fail with a "did you mean"
        if not formats <= READS[name]:
            raise ConfigError(f"the {name} backend cannot open this bundle's {'/'.join(sorted(formats))} towers")
    if not chain:
        raise BundleError(f"no backend of target {manifest.target!r} can open {'/'.join(sorted(formats))} towers")
    backends = {p.backend for p in chain} | ({wanted_backend} if wanted_backend else set())
    placement, warnings = choose_placement(chain, _available(backends), device, strict)
    for warning in warnings:
        log.warning(warning)
    runtime = RUNTIMES.get(placement.backend)(root, manifest, placement.device, options, strict=strict)
    if strict and runtime.device.lower() != placement.device.lower():
        raise BackendUnavailableError(
            f"{placement} was listed but could not start (running on {runtime.device}); strict=True: not falling back"
        )
    try:
        tokenizer = TextTokenizer.from_file(safe_join(root, manifest.tokenizer.file), _tokenizer_spec(runtime))
    except CheckpointError as exc:
        raise BundleError(f"{exc}; re-run vledge compress") from None
    report = {
        "placement": str(placement),
        "chain": [str(p) for p in chain],
        "skipped": [f"{p} (cannot open {'/'.join(sorted(formats))})" for p in unreadable],
        "warnings": warnings + runtime.warnings,
    }
    return runtime, tokenizer, read_label_set(root, manifest), report


def _tokenizer_spec(runtime: Runtime):
    """The bundle's tokenizer spec, its max length set to a static text tower's sequence length."""
    spec = runtime.manifest.tokenizer
    if "text" not in runtime.manifest.towers:
        return spec
    seq = next(iter(runtime.input_shapes("text").values()))[-1]
    return dataclasses.replace(spec, max_length=seq) if isinstance(seq, int) else spec


def _open_checkpoint(root: Path, device: str, strict: bool, options: dict):
    from vledge.runtimes.torch_backend import TorchRuntime

    chain = [Placement("torch", "cpu")]
    placement, warnings = choose_placement(chain, _available({"torch"}), device, strict)
    for warning in warnings:
        log.warning(warning)
    runtime = TorchRuntime.from_checkpoint(root, placement.device, options)
    labels = runtime.labels
    label_set = LabelSet(list(labels["classes"]), None, list(labels.get("templates") or [])) if labels else None
    report = {"placement": str(placement), "chain": [str(p) for p in chain], "skipped": [], "warnings": warnings}
    return runtime, runtime.tokenizer, label_set, report


def _available(backends: set[str]) -> dict[str, list[str]]:
    """The devices each installed backend reaches here (only the backends asked about are imported)."""
    found = {}
    for name in sorted(backends):
        cls = RUNTIMES.get(name)
        if cls.is_available():
            found[name] = cls.devices()
    return found


__all__ = ["load", "EdgeModel", "LabelSet", "Runtime", "RUNTIMES", "choose_placement"]
