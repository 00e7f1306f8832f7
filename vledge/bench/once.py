"""A value made on first use and kept: the benchmark's variants share their expensive steps."""

from __future__ import annotations

from typing import Callable


class Once:
    """Call ``make`` once; later calls return its result or raise its exception again."""

    def __init__(self, make: Callable):
        self.make, self.done, self.value, self.error = make, False, None, None

    def __call__(self):
        if not self.done:
            try:
                self.value = self.make()
            except Exception as exc:
                self.error = exc
            self.done = True
        if self.error is not None:
            raise self.error
        return self.value
