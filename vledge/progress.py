"""Progress for long work: a tqdm bar on a terminal, plain log lines everywhere else.

A log file, CI, ``nohup``, docker or systemd has no terminal, and a bar there prints nothing until the
work ends. Without one, progress is a start line, then a line (done, percent, rate, time left) ten
seconds in and every 25 seconds after, and an end line, through the ``vledge.progress``
logger: the CLI shows it at INFO, ``-q`` hides it, ``--log-file`` keeps it. A heartbeat thread keeps the
lines coming while one slow item runs.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("vledge.progress")

FIRST_LINE_S = 10.0  # a rate and an estimate within the first minute
EVERY_S = 25.0  # under the 30 s a log reader may wait, with room for a loaded machine's delays


def progress_bar(items: Iterable[T], *, desc: str = "", total: int | None = None, enabled: bool = True,
                 unit: str = "steps", estimate_s: float | None = None) -> Iterable[T]:
    """Iterate ``items`` and show progress: tqdm when stderr is a terminal (and tqdm is installed), else
    plain periodic log lines. ``total`` defaults to ``len(items)``; ``estimate_s``, when the caller knows
    one, goes into the start line. ``enabled=False`` returns ``items`` untouched."""
    if not enabled:
        return items
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, unit=unit)
    return _plain(items, PlainProgress(desc, total, unit, estimate_s=estimate_s))


def _plain(items: Iterable[T], progress: "PlainProgress") -> Iterator[T]:
    progress.start()
    heartbeat = Heartbeat(progress)
    handed = 0
    try:
        for item in items:
            handed += 1
            yield item
            progress.advance()
        progress.finish()
    finally:
        heartbeat.stop()
        # A consumer that calls next() once per step never asks past the last item: all handed out is done.
        if progress.total is not None and handed >= progress.total:
            progress.done = progress.total
            progress.finish()
        progress.close()  # else it stopped early (early stopping, an error)


def _count(n: int, unit: str) -> str:
    """``1 step``, ``2 steps``, ``1 batch``."""
    if n == 1 and unit.endswith("s"):
        unit = unit[:-2] if unit.endswith(("ches", "shes", "xes")) else unit[:-1]
    return f"{n} {unit}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """The line schedule and wording of progress without a terminal; ``clock`` and ``emit`` are injectable
    so tests drive it with a fake clock."""

    def __init__(self, desc: str, total: int | None, unit: str = "steps", *, estimate_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, emit: Callable[[str], None] | None = None,
                 first_s: float = FIRST_LINE_S, every_s: float = EVERY_S):
        self.desc, self.total, self.unit, self.estimate_s = desc or "progress", total, unit, estimate_s
        self.clock, self.emit = clock, emit or log.info
        self.first_s, self.every_s = first_s, every_s
        self.done, self.started, self.last_line, self.closed = 0, None, None, False
        self.lock = threading.Lock()

    def start(self) -> None:
        self.started = self.last_line = self.clock()
        count = _count(self.total, self.unit) if self.total is not None else f"{self.unit} until done"
        estimate = f", about {_clock(self.estimate_s)}" if self.estimate_s is not None else ""
        self.emit(f"{self.desc}: started, {count}{estimate}")

    def advance(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
        self.tick()

    def tick(self) -> None:
        """Write a progress line when one is due: ``first_s`` after the start, then every ``every_s``."""
        with self.lock:
            if self.closed or self.started is None:
                return
            now = self.clock()
            due = self.first_s if self.last_line == self.started else self.every_s
            if now - self.last_line < due:
                return
            self.last_line = now
            line = self._line(now)
        self.emit(line)

    def seconds_to_next_line(self) -> float:
        with self.lock:
            due = self.first_s if self.last_line == self.started else self.every_s
            return max(0.0, self.last_line + due - self.clock())

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            head = f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            head = _count(self.done, self.unit)
        speed = f"{rate:.2f} {self.unit}/s" if rate >= 0.1 or rate == 0 else f"{1 / rate:.1f} s each"
        left = ""
        if self.total and rate > 0:
            left = f", {_clock((self.total - self.done) / rate)} left"
        elif self.total and self.done == 0:
            left = ", no estimate yet (first one still running)"
        return f"{self.desc}: {head}, {speed}{left}, {_clock(elapsed)} elapsed"

    def finish(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            elapsed = self.clock() - self.started
            rate = f" ({self.done / elapsed:.2f} {self.unit}/s)" if elapsed > 0 else ""
        self.emit(f"{self.desc}: done, {_count(self.done, self.unit)} in {_clock(elapsed)}{rate}")

    def close(self) -> None:
        """End without finishing: say where it stopped (nothing when :meth:`finish` already ran)."""
        with self.lock:
            if self.closed or self.started is None:
                return
            self.closed = True
            of = f"/{self.total}" if self.total is not None else ""
            line = f"{self.desc}: stopped at {self.done}{of} {self.unit} after {_clock(self.clock() - self.started)}"
        self.emit(line)


class Heartbeat:
    """A daemon thread that calls ``progress.tick()`` when a line is due, so one item slower than
    the interval still gets its lines."""

    def __init__(self, progress: PlainProgress):
        self.progress, self.stopped = progress, threading.Event()
        self.thread = threading.Thread(target=self._run, name="vledge-progress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.progress.seconds_to_next_line() + 0.05):
            self.progress.tick()

    def stop(self) -> None:
        self.stopped.set()
