"""A one-item hand-over between the decoder thread and the inference loop: never an unbounded queue."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item. ``put(block=False)`` replaces an item not yet taken (newest wins, the
    old one is counted in ``dropped``); ``put(block=True)`` waits until the slot is free (a file read
    at the consumer's pace). ``close()`` wakes every waiter; a closed slot accepts nothing more."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: T, block: bool, timeout: float | None = None) -> bool:
        """Offer ``item``; False when the slot is closed (the consumer went away) or ``timeout`` passed."""
        with self._cond:
            if block:
                if not self._cond.wait_for(lambda: not self._full or self._closed, timeout):
                    return False
            if self._closed:
                return False
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> tuple[bool, T | None]:
        """``(True, item)``, or ``(False, None)`` when ``timeout`` passed or the slot was closed empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout):
                return False, None
            if not self._full:
                return False, None
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return True, item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
