"""Where the CLI's log lines go: stderr at the chosen verbosity, and everything into ``--log-file``."""

from __future__ import annotations

import logging
import sys

from vledge.errors import OutputError

CONSOLE_LEVEL = {"verbose": logging.DEBUG, None: logging.INFO, "quiet": logging.WARNING}


class ConsoleFormatter(logging.Formatter):
    """``12:00:01 distil: 40/120 steps ...`` for progress; the level and logger name only on warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname} {record.name}: "
        self._style._fmt = f"%(asctime)s {prefix}%(message)s"
        return super().format(record)


def configure_logging(verbosity: str | None, log_file: str | None) -> None:
    """vledge's own lines at INFO (DEBUG with ``-v``, WARNING with ``-q``); other libraries only warn
    (ONNX Runtime's quantizer logs a line per tensor at INFO through the root logger). A program that
    calls ``main()`` with its own logging set up keeps it."""
    root = logging.getLogger()
    if root.handlers:
        return
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(CONSOLE_LEVEL[verbosity])
    console.setFormatter(ConsoleFormatter(datefmt="%H:%M:%S"))
    root.addHandler(console)
    root.setLevel(logging.WARNING)
    vledge_level = CONSOLE_LEVEL[verbosity]
    if log_file:
        try:
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {log_file} ({exc.strerror or exc}); choose a writable --log-file") from None
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        vledge_level = logging.DEBUG
    logging.getLogger("vledge").setLevel(vledge_level)
