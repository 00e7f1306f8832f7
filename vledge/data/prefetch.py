"""Decode the next batch in a background thread while the current one trains."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(make: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
    """``(item, make(item))`` for each item, in order, with ``make`` running one item ahead in a thread.

    Image decoding and resizing (Pillow) and large numpy operations release the GIL, so the next batch
    gets ready while the caller's training step runs. An exception raised by ``make`` is raised here, at
    its item; leaving the loop early waits for the one batch still being made.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vledge-prefetch") as pool:
        pending = None
        for item in items:
            future = pool.submit(make, item)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (item, future)
        if pending is not None:
            yield pending[0], pending[1].result()
