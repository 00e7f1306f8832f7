"""The rows of one benchmark run, in the order they are measured: the teacher's, the peers' (for a
Hugging Face CLIP teacher), the student's, then every bundle given."""

from __future__ import annotations

from pathlib import Path

from vledge.bench import peers
from vledge.bench.once import Once
from vledge.bench.rows import Variant, Workshop, built_in_rows, bundle_model, bundle_params
from vledge.errors import ConfigError
from vledge.registry import did_you_mean


def variants(shop: Workshop, bundles: list[str | Path], only: list[str] | None = None,
             skipped: list[str] | None = None) -> list[Variant]:
    """The rows of one benchmark run in the order they are measured (the teacher first: its
    embeddings are the reference for every other row's cosine); ``only`` keeps the built-in rows with
    these keys, every given bundle is always measured. Rows that cannot apply (peers of a teacher that
    is not a Hugging Face CLIP folder) are left out, with the reason appended to ``skipped``."""
    teacher_onnx = Once(shop.teacher_onnx)
    built_in = built_in_rows(shop, teacher_onnx)
    peer_rows, reason = peers.peer_rows(shop, teacher_onnx)
    rows = built_in[:2] + peer_rows + built_in[2:]
    keys = [v.key for v in built_in[:2]] + list(peers.PEER_KEYS) + [v.key for v in built_in[2:]]
    unknown = sorted(set(only or ()) - set(keys))
    if unknown:
        raise ConfigError(f"unknown row {unknown[0]!r}.{did_you_mean(unknown[0], keys)} Rows: {', '.join(keys)}")
    wanted_peers = [k for k in peers.PEER_KEYS if only is None or k in only]
    if reason and wanted_peers and skipped is not None:
        skipped.append(f"peer rows: {reason}")
    if only is not None:
        rows = [v for v in rows if v.key in only]
    for path in bundles:
        path = Path(path)
        name = f"bundle {path.name}"
        while any(v.name == name for v in rows):  # two bundles in folders of the same name
            name += "'"
        rows.append(Variant(name, name, "bundle", _precision(path), path=path, params=lambda p=path: bundle_params(p),
                            model=lambda p=path: bundle_model(p)))
    return rows


def _precision(bundle: Path) -> str:
    """The precision a bundle's manifest declares, or "" where it cannot be read (the row will say why)."""
    from vledge.bundle_files import read_manifest
    from vledge.errors import BundleError

    try:
        return read_manifest(bundle, verify=False).precision
    except BundleError:
        return ""
