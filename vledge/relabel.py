"""Compile a new label set into an existing bundle with its own text tower: no re-compression, no torch.

The bundle is verified first, rebuilt in a temporary sibling folder (tower files hard-linked, not
copied), given new ``labels.json`` + ``label_embeddings.npy`` and fresh manifest hashes by the same
code ``vledge compress`` uses, then renamed into place: a reader sees the old bundle or the new one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from vledge.bundle import write_manifest
from vledge.bundle_files import read_manifest
from vledge.errors import BundleError, ConfigError

log = logging.getLogger(__name__)


def read_label_file(path: str | os.PathLike) -> tuple[list[str], list[str] | None]:
    """Names (and templates, if given) from a label-set file.

    ``.json``: ``{"names": [...], "templates": ["a photo of a {}."]}`` or a list of names; any other
    suffix: one name a line, blank lines and lines starting with ``#`` skipped.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read label set {path}: {exc}") from None
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")], None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"label set {path} is not valid JSON: {exc}") from None
    if isinstance(data, list):
        return data, None
    if not isinstance(data, dict) or "names" not in data:
        raise ConfigError(f'label set {path} must be a list of names or {{"names": [...], "templates": [...]}}')
    return data["names"], data.get("templates")


def compile_labels(bundle: str | os.PathLike, names: Sequence[str], templates: Sequence[str] | None = None, *,
                   device: str = "auto", strict: bool = False, source: str | None = None) -> dict:
    """Replace the bundle's compiled label set with ``names`` embedded by its own text tower.

    ``templates`` default to the ones the current set was made with (else the label as is); ``device`` and
    ``strict`` are :func:`vledge.load`'s. Returns
    ``{"names", "templates", "seconds"}``. Raises BundleError for a bundle that fails its hashes or has
    no text tower, ConfigError for bad names (empty, duplicates, not strings).
    """
    import vledge
    from vledge.compress.bundle.writer import _move_into_place, _set_modes, _write_labels

    start = time.perf_counter()
    root = Path(bundle)
    manifest = read_manifest(root, verify=True)
    if "text" not in manifest.towers:
        raise BundleError(f"{root} has no text tower, so it cannot embed new labels; compile them where it was made")
    if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names) or not names:
        raise ConfigError("a label set is a non-empty list of non-empty strings")
    names = [n.strip() for n in names]
    model = vledge.load(root, device=device, strict=strict)
    if templates is None:
        templates = (model.label_set.templates if model.label_set else None) or ["{}"]
    templates = list(templates)
    embeddings = model.label_embeddings(names, templates)
    old = set(manifest.labels.values()) if manifest.labels else set()
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-{os.getpid()}-", dir=root.parent))
    try:
        for rel in manifest.files:
            if rel not in old:
                _link_or_copy(root / rel, staging / rel)
        manifest.labels = _write_labels(staging, {"names": names, "embeddings": embeddings, "templates": templates},
                                        manifest.embed_dim)
        manifest.provenance = {**manifest.provenance, "labels": {
            "compiled_by": f"vledge {vledge.__version__} labels", "count": len(names), "source": source,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
        write_manifest(staging, manifest)
        _set_modes(staging, _is_shared(root))
        _move_into_place(staging, root, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    read_manifest(root, verify=True)  # what was written is a bundle that verifies
    seconds = round(time.perf_counter() - start, 3)
    log.debug("compiled %d labels x %d templates into %s in %.2f s", len(names), len(templates), root, seconds)
    return {"names": names, "templates": templates, "seconds": seconds}


def _is_shared(root: Path) -> bool:
    """Keep the bundle's own permissions: readable by others if it was."""
    return bool(root.stat().st_mode & 0o004)


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)  # the renamed-away old folder is removed, the tower's data stays: no copy
    except OSError:
        shutil.copy2(src, dest)
