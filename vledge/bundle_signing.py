"""Signing a bundle folder: its files verified first, then ``vledge.sig`` written beside the manifest.

The signature itself (keys, the signed record, its check on load) is ``vledge.signing``, which the
bundle reader uses; this module uses the reader, so it sits above both.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from vledge.bundle import SIGNATURE
from vledge.bundle_files import read_bundle
from vledge.signing import load_private_key, signature_record


def sign_bundle(folder: str | os.PathLike, private_key_path: str | os.PathLike) -> dict:
    """Sign ``folder``'s manifest (its files are verified first) and write ``vledge.sig`` beside it, atomically."""
    key = load_private_key(private_key_path)
    bundle = read_bundle(folder)
    record = signature_record(bundle.manifest_bytes, key)
    fd, tmp = tempfile.mkstemp(prefix=f".{SIGNATURE}.", dir=bundle.root)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, bundle.root / SIGNATURE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return record
