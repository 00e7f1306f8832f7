"""Progress bars for long work: tqdm when it is installed and output is a terminal, else a plain iterator."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, desc: str = "", total: int | None = None, enabled: bool = True) -> Iterable[T]:
    if not enabled or not sys.stderr.isatty():
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
