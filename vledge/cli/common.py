"""Small helpers the device commands share: comma-separated lists, label files, JSON lines output."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from vledge.errors import ConfigError, OutputError


def split_list(text: str | None) -> list[str] | None:
    """``"a cat, a dog"`` -> ``["a cat", "a dog"]``; None stays None."""
    if text is None:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


def read_json_file(path: str, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from None


@contextlib.contextmanager
def output_lines(path: str | None, flag: str = "--out"):
    """A text stream for JSON lines: stdout for None or ``-``, else the file (created, or replaced)."""
    if path in (None, "-"):
        yield sys.stdout
        return
    try:
        fh = open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}); choose a writable {flag}") from None
    with fh:
        yield fh
