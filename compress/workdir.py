"""The work folder of a compress run: finished stages are kept so `--resume` can skip them.

Each stage writes into ``<work>/<stage>.tmp`` and is renamed to ``<work>/<stage>`` with a
``done.json`` that records the stage's key (a hash of everything it depends on); a stage whose key
changed is run again. A run holds an exclusive lock on its work folder (``fcntl.flock`` on ``.lock``), so
a second run sharing the folder stops at once instead of deleting the first one's stages.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from vledge.errors import ConfigError

DONE = "done.json"
LOCK = ".lock"


def stage_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class WorkDir:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Released when the lock file is closed: by close(), remove(), or the process ending (even killed).
        self._lock = open(root / LOCK, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(
                f"work folder {root} is in use by another vledge compress run; wait for it to finish, or give this "
                "run its own --work-dir (or --out)"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()

    def is_empty(self) -> bool:
        """True when no stage (finished or not) is in the folder."""
        return all(p.name == LOCK for p in self.root.iterdir())

    def clear(self) -> None:
        """Remove every stage, keeping the folder and its lock."""
        for path in self.root.iterdir():
            if path.name != LOCK:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()

    def close(self) -> None:
        self._lock.close()

    def finished(self, stage: str, key: str) -> dict | None:
        """The record of ``stage`` if it finished with this ``key``, else None."""
        done = self.root / stage / DONE
        if not done.is_file():
            return None
        record = json.loads(done.read_text())
        return record if record.get("key") == key else None

    def start(self, stage: str) -> Path:
        tmp = self.root / f"{stage}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def finish(self, stage: str, key: str, record: dict) -> Path:
        tmp, final = self.root / f"{stage}.tmp", self.root / stage
        (tmp / DONE).write_text(json.dumps({**record, "key": key}, indent=2, default=str))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return final

    def path(self, stage: str) -> Path:
        return self.root / stage

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.close()
