"""The torch-free edge runtime: ``load`` a bundle (or a checkpoint, for accuracy checks) and run it.

Every ``runtimes/*_backend.py`` registers its backend when this package is imported
(``runtimes/discovery.py``); none imports its framework until it is chosen.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from vledge.bundle import MANIFEST
from vledge.bundle_files import BundleFiles, parse_json, read_bundle
from vledge.errors import BundleError, CheckpointError, ConfigError
from vledge.label_set import LabelSet, parse_embeddings, parse_label_record
from vledge.runtimes.base import RUNTIMES, Runtime
from vledge.runtimes.discovery import discover_backends
from vledge.runtimes.model import EdgeModel
from vledge.runtimes.selection import addressable, available_devices, choose_placement, readable_chain
from vledge.runtimes.selftest import check_on_load
from vledge.runtimes.tower_checks import check_towers
from vledge.runtimes.towers import choose_tower_placements, describe, open_runtimes, tower_requests
from vledge.targets import TARGETS, Placement
from vledge.text import TextTokenizer

log = logging.getLogger(__name__)
discover_backends()

CHECKPOINT_CONFIG = "config.json"


def load(
    path: str | os.PathLike, device: str = "auto", strict: bool = False, backend: str | None = None, *,
    image_device: str | None = None, text_device: str | None = None, self_test: bool = True,
    trusted_keys: Sequence | None = None, manifest_sha256: str | None = None, **options
) -> EdgeModel:
    """Load a bundle folder (or, with ``backend="torch"``, a checkpoint folder) for inference.

    ``device``: ``"auto"`` (the bundle target's preferred placement, falling back along its chain),
    a device (``"cpu"``, ``"cuda"``, ``"tensorrt"``, ``"GPU"``, ``"NPU"``) or ``"backend:device"``.
    An unreachable device falls back with one logged warning, or raises
    :class:`~vledge.errors.BackendUnavailableError` when ``strict``. ``backend`` limits the choice
    to one registered backend (``RUNTIMES.names()``: ``"onnxruntime"``, ``"openvino"``, ``"torch"``).
    ``options`` go to the backend (``threads``; ``exact`` for OpenVINO; ``trt_cache_dir`` for TensorRT).

    Every bundle file is read once, checked against its sha256, and those bytes are what the frameworks
    get; links, special files and files the manifest does not list are refused. ``trusted_keys`` (paths
    to Ed25519 public keys, or the keys: see ``vledge keygen``) requires the manifest to be signed by one
    of them (``vledge sign``); ``manifest_sha256`` pins its exact bytes. Either failing raises
    :class:`~vledge.errors.UntrustedBundleError` before any framework opens anything.

    ``image_device`` / ``text_device`` place one tower elsewhere (spelled as ``device``), e.g.
    ``device="NPU", text_device="cpu"``: the towers then run on a runtime each.

    With ``self_test`` (the default) the bundle's probes then run on the chosen placement
    (``runtimes/selftest.py``): a tower giving NaN/inf, embeddings off their reference or one embedding
    for every probe moves to the next placement of the chain with a warning, or raises
    :class:`~vledge.errors.SelfTestError` when ``strict``. ``info()["self_test"]`` says what ran.
    """
    start = time.perf_counter()
    root = Path(path)
    if backend is not None:
        RUNTIMES.get(backend)
    is_bundle = os.path.lexists(root / MANIFEST)
    if backend == "torch" or (not is_bundle and (root / CHECKPOINT_CONFIG).is_file()):
        if trusted_keys is not None or manifest_sha256 is not None:
            raise ConfigError("trusted_keys and manifest_sha256 check bundles; a checkpoint folder has no signature")
        if image_device or text_device:
            raise ConfigError("image_device and text_device place a bundle's towers; a checkpoint runs on one device")
        runtime, tokenizer, labels, report = _open_checkpoint(root, device, strict, options)
    else:
        bundle = read_bundle(root, trusted_keys=trusted_keys, manifest_sha256=manifest_sha256)
        towers = {"image_device": image_device, "text_device": text_device, "self_test": self_test}
        runtime, tokenizer, labels, report = _open_bundle(bundle, device, strict, backend, options, **towers)
    report = {"path": str(root), **report, "load_seconds": round(time.perf_counter() - start, 4)}
    return EdgeModel(runtime, tokenizer, label_set=labels, report=report)


def _open_bundle(bundle: BundleFiles, device: str, strict: bool, backend: str | None, options: dict, *,
                 image_device=None, text_device=None, self_test=True):
    root, manifest = bundle.root, bundle.manifest
    if manifest.target not in TARGETS:
        raise BundleError(
            f"{root / MANIFEST} names target {manifest.target!r:.80}, unknown to this vledge "
            f"(knows: {', '.join(TARGETS.names())}); upgrade vledge"
        )
    labels = read_label_set(bundle)
    formats = {t.format for t in manifest.towers.values()}
    chain, unreadable = readable_chain(TARGETS.get(manifest.target).chain, formats)
    if backend is not None:
        chain = [p for p in chain if p.backend == backend] or [Placement(backend, addressable(backend)[0])]
    requests = tower_requests(manifest.towers, device, image_device, text_device)
    wanted = {d.split(":", 1)[0] for d in requests.values() if ":" in d}
    for name in filter(None, (backend, *sorted(wanted))):
        RUNTIMES.get(name)  # unknown names fail with a "did you mean"
        if not formats <= RUNTIMES.get(name).reads:
            raise ConfigError(f"the {name} backend cannot open this bundle's {'/'.join(sorted(formats))} towers")
    if not chain:
        raise BundleError(f"no backend of target {manifest.target!r} can open {'/'.join(sorted(formats))} towers")
    available = available_devices({p.backend for p in chain} | wanted)
    placements, warnings = choose_tower_placements(chain, available, requests, strict)
    for warning in warnings:
        log.warning(warning)
    by_kind = open_runtimes(bundle, placements, options, strict)
    # Built once the towers are open, so that its tables do not add to the peak of a session's build.
    tokenizer = read_tokenizer(bundle)
    for runtime in {id(r): r for r in by_kind.values()}.values():
        check_towers(runtime, tokenizer)
    runtime, placements, checked, said = check_on_load(bundle, by_kind, placements, tokenizer, chain,
                                                       available, options, strict, self_test)
    report = {
        "placement": describe(placements),
        "chain": [str(p) for p in chain],
        "skipped": [f"{p} (cannot open {'/'.join(sorted(formats))})" for p in unreadable],
        "warnings": warnings + runtime.warnings + said,
        "self_test": checked,
        "manifest_sha256": bundle.manifest_sha256,
        "signed_by": bundle.signed_by,
    }
    return runtime, tokenizer, labels, report


def read_tokenizer(bundle: BundleFiles) -> TextTokenizer:
    """The bundle's tokenizer, built from the bytes read at load."""
    spec = bundle.manifest.tokenizer
    try:
        return TextTokenizer.from_bytes(bundle[spec.file], spec, str(bundle.root / spec.file))
    except CheckpointError as exc:
        raise BundleError(f"{exc}; re-run vledge compress") from None


def read_label_set(bundle: BundleFiles) -> LabelSet | None:
    """The bundle's compiled label set (``labels.json`` + ``label_embeddings.npy``), checked, or None."""
    manifest = bundle.manifest
    if not manifest.labels:
        return None
    names_file, embeddings_file = manifest.labels["file"], manifest.labels["embeddings"]
    names, templates = parse_label_record(parse_json(bundle[names_file], names_file), names_file)
    embeddings = parse_embeddings(bundle[embeddings_file], embeddings_file, names, manifest.embed_dim, names_file)
    return LabelSet(names, embeddings, templates)


def _open_checkpoint(root: Path, device: str, strict: bool, options: dict):
    from vledge.runtimes.torch_backend import TorchRuntime

    chain = [Placement("torch", "cpu")]
    placement, warnings = choose_placement(chain, available_devices({"torch"}), device, strict)
    for warning in warnings:
        log.warning(warning)
    runtime = TorchRuntime.from_checkpoint(root, placement.device, options)
    labels = runtime.labels
    label_set = LabelSet(list(labels["classes"]), None, list(labels.get("templates") or [])) if labels else None
    report = {"placement": str(placement), "chain": [str(p) for p in chain], "skipped": [], "warnings": warnings,
              "self_test": {"ran": False, "reason": "a checkpoint records no probes"}}
    return runtime, runtime.tokenizer, label_set, report


__all__ = ["load", "EdgeModel", "LabelSet", "Runtime", "RUNTIMES", "choose_placement"]
