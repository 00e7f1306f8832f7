"""Stage 7, bundle: write a bundle folder atomically: build it in a temporary sibling, then rename it into place.

An exception or interrupt at any point leaves ``out`` as it was and removes the temporary folder, so
a device never sees half a bundle. Writers take turns on a lock (on ``out``'s parent folder) for the
final rename, so a second writer never silently replaces the first one's bundle. No torch here.
"""

from __future__ import annotations

import fcntl
import glob
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from vledge.bundle import MANIFEST, BundleManifest, TowerSpec, write_manifest
from vledge.compress.bundle.probes import write_probes
from vledge.errors import BundleError, ConfigError
from vledge.images import PreprocessSpec
from vledge.targets import TargetSpec, as_target
from vledge.text import TextTokenizer

log = logging.getLogger(__name__)

LABELS_FILE = "labels.json"
LABEL_EMBEDDINGS_FILE = "label_embeddings.npy"
# Distribution names recorded in every bundle's provenance, when installed.
TOOLCHAIN = ("vledge", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "optimum", "torch", "transformers")


def toolchain_versions() -> dict[str, str]:
    """Installed versions of vledge and its toolchain (read from package metadata: nothing is imported)."""
    versions = {}
    for dist in TOOLCHAIN:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def bundle_precision(towers: dict[str, tuple[TowerSpec, list[Path]]]) -> str:
    """The manifest's precision for towers of these precisions ("int8", or "fp32+int8" when they differ)."""
    precisions = sorted({spec.precision for spec, _ in towers.values()})
    return precisions[0] if len(precisions) == 1 else "+".join(precisions)


def write_bundle(
    out: str | os.PathLike,
    *,
    towers: dict[str, tuple[TowerSpec, list[Path]]],
    tokenizer: TextTokenizer,
    preprocess: PreprocessSpec,
    target: TargetSpec | str,
    precision: str,
    embed_dim: int,
    logit_scale: float,
    labels: dict | None = None,
    probes=None,
    config: dict, metrics: dict, provenance: dict,
    overwrite: bool = False, shared: bool = True,
) -> Path:
    """Write a complete bundle to ``out`` and return its path.

    ``target`` is the row the bundle is made for, or its name (an unknown name fails with a "did you mean").
    ``towers`` maps ``"image"`` / ``"text"`` to the tower's spec and the files that make it (an
    ``.onnx`` with any external-data files, or an OpenVINO ``.xml`` with its ``.bin``); files are
    copied under their own names, and ``spec.file`` must be one of them.
    ``logit_scale`` is the multiplier of cosine similarities (the exp of a model's learned log scale).
    ``labels``, when given, is a compiled label set: ``{"names": [...], "embeddings": (n, embed_dim)
    float32 L2-normalised, "templates": [...] (optional, the prompts the embeddings were made from)}``.
    ``probes``, when given, is a :class:`vledge.compress.bundle.probes.Probes`: inputs and FP32 embeddings that
    ``vledge.load`` runs as its self-test.

    An existing ``out`` is refused unless ``overwrite``, also when it appears while this bundle is being
    written; with ``overwrite`` it is replaced only once the new bundle is complete, and only if it is a
    bundle (has ``vledge.json``) or an empty folder. ``shared``: readable by other users (folders 0755,
    files 0644: a service user can load a bundle built by root); else by the owner only (0700, 0600).
    """
    out = Path(out)
    target = as_target(target)
    if not towers or not set(towers) <= {"image", "text"}:
        raise ConfigError(f"a bundle holds an 'image' and/or a 'text' tower, got {sorted(towers)}")
    _check_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        copied = {kind: _copy_tower(kind, spec, files, staging) for kind, (spec, files) in towers.items()}
        tokenizer.save(staging)
        manifest = BundleManifest(
            target=target.name, precision=precision, embed_dim=int(embed_dim), logit_scale=float(logit_scale),
            towers=copied, preprocess=preprocess, tokenizer=tokenizer.spec,
            labels=_write_labels(staging, labels, embed_dim) if labels is not None else None,
            probes=write_probes(staging, probes, embed_dim, set(towers)) if probes is not None else None,
            config=config, metrics=metrics,
            provenance={**provenance, "versions": {**toolchain_versions(), **provenance.get("versions", {})}},
        )
        write_manifest(staging, manifest)
        _set_modes(staging, shared)
        _move_into_place(staging, out, overwrite)
    except BaseException:  # interrupts too: never leave a half-written folder behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle written to %s (%d files)", out, len(manifest.files) + 1)
    return out


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders of ``out`` left by writers that were killed (their process is gone)."""
    for folder in out.parent.glob(f".{glob.escape(out.name)}.tmp-*-*"):
        pid = folder.name[len(out.name) + 6 :].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            log.info("removing %s, left by an interrupted bundle write", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process
        return True
    return True


def _check_destination(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise BundleError(f"{out} already exists; choose another folder or pass overwrite=True (--overwrite)")
    if not out.is_dir() or not ((out / MANIFEST).is_file() or not any(out.iterdir())):
        raise BundleError(
            f"refusing to overwrite {out}: it is not a vledge bundle (no {MANIFEST}); remove it yourself "
            "or choose another folder"
        )


def _copy_tower(kind: str, spec: TowerSpec, files: list[Path], staging: Path) -> TowerSpec:
    names = [Path(f).name for f in files]
    for file in spec.files:
        if file not in names:
            raise ConfigError(f"the {kind} tower's file {file!r} is not among its files {names}")
        if spec.format == "openvino" and Path(file).with_suffix(".bin").name not in names:
            raise ConfigError(f"the {kind} tower {file} is OpenVINO IR but its .bin weights file was not given")
    for src, name in zip(files, names):
        dest = staging / name
        if dest.exists():
            raise ConfigError(f"two bundle files are both named {name!r}; give the towers distinct file names")
        if not Path(src).is_file():
            raise ConfigError(f"the {kind} tower's file {src} does not exist")
        shutil.copyfile(src, dest)
    return spec


def _write_labels(staging: Path, labels: dict, embed_dim: int) -> dict:
    names = list(labels.get("names") or [])
    embeddings = np.asarray(labels.get("embeddings"), dtype=np.float32)
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError("a compiled label set needs a non-empty list of label names")
    if len(set(names)) != len(names):
        raise ConfigError("the compiled label set has duplicate names; each label must appear once")
    if embeddings.shape != (len(names), embed_dim):
        raise ConfigError(
            f"label embeddings have shape {embeddings.shape}, expected ({len(names)}, {embed_dim})"
        )
    if not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3):
        raise ConfigError("label embeddings must be L2-normalised (each row of norm 1)")
    record = {"names": names}
    if labels.get("templates"):
        record["templates"] = list(labels["templates"])
    (staging / LABELS_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    np.save(staging / LABEL_EMBEDDINGS_FILE, embeddings, allow_pickle=False)
    return {"file": LABELS_FILE, "embeddings": LABEL_EMBEDDINGS_FILE}


def _set_modes(folder: Path, shared: bool) -> None:
    dirs, files = (0o755, 0o644) if shared else (0o700, 0o600)
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, dirs if path.is_dir() else files)


def _move_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    # The lock (on the parent folder: nothing is left behind) makes "is out there? then rename" one step
    # for vledge writers; a folder made by anything else in between is still never replaced without
    # overwrite, since a rename onto a non-empty folder fails.
    parent = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(parent, fcntl.LOCK_EX)
        except OSError:  # a file system that cannot lock folders (NFS): the checks below still hold, unlocked
            log.debug("cannot lock %s; renaming %s into place without it", out.parent, out.name)
        if os.path.lexists(out) and not overwrite:
            raise BundleError(
                f"{out} appeared while this bundle was being written (another writer?); it was left as it is: "
                "choose another folder or pass overwrite=True (--overwrite)"
            )
        if not os.path.lexists(out):
            try:
                os.rename(staging, out)
            except OSError as exc:
                raise BundleError(f"{out} appeared while this bundle was being written ({exc.strerror}); it was left "
                                  "as it is: choose another folder") from None
            return
        _check_destination(out, overwrite)
        # POSIX cannot rename a folder over a non-empty one: move the old one aside, and back on failure.
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        try:
            os.rename(staging, out)
        except BaseException:
            os.rename(old, out)
            raise
    finally:
        os.close(parent)  # releases the lock
    shutil.rmtree(old, ignore_errors=True)
