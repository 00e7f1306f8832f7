"""The work folder of a compress run: finished stages are kept so `--resume` can skip them.

Each stage writes into ``<work>/<stage>.tmp`` and is renamed to ``<work>/<stage>`` with a
``done.json`` that records the stage's key (a hash of everything it depends on); a stage whose key
changed is run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

DONE = "done.json"


def stage_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class WorkDir:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

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
