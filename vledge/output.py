"""Writing results: refuse an unwritable destination before hours of work, and name a write that fails.

No torch here.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from vledge.errors import OutputError

# Errors that only writing can cause: whatever was being written, the cure is space or another place.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def check_writable(folder: str | os.PathLike, flag: str) -> Path:
    """Create ``folder`` if needed and write a probe file in it; raise OutputError naming ``flag`` if that fails.

    A probe rather than ``os.access``: root passes every permission check, yet still cannot write
    under a regular file or on a read-only mount.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write to {folder}: it is a file, not a folder; choose a writable {flag}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write to {folder} ({exc.strerror or exc}); choose a writable {flag}") from None
    return folder


def write_json(path: str | os.PathLike, data, flag: str) -> Path:
    """Write ``data`` as indented JSON to ``path``; a failed write is an OutputError naming ``flag``."""
    path = Path(path)
    try:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}); choose a writable {flag}") from None
    return path
