"""Regions of a frame to classify as crops: fixed zones and per-frame boxes from a JSON lines file, or
a callable (a detector's output) that returns boxes for each frame.

A JSON lines file holds one box a line, in pixels, ``[x0, y0, x1, y1]``::

    {"box": [0, 0, 320, 240], "id": "doorway"}          # no "frame": a zone, on every frame
    {"frame": 12, "box": [40, 60, 200, 300], "id": 7}   # only on source frame 12 (a detection)

``id`` names the region in events (default: ``zone-N`` / ``box-N`` by position).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, Union

import numpy as np

from vledge.errors import ConfigError, DataError

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Region:
    """A box in pixels (x0, y0, x1, y1) and the id events name it by."""

    box: Box
    id: str

    @staticmethod
    def of(value, default_id: str) -> "Region":
        """A Region from a Region, a 4-sequence, or a mapping ``{"box": [...], "id": ...}``."""
        if isinstance(value, Region):
            return value
        ident = default_id
        if isinstance(value, dict):
            ident = str(value["id"]) if value.get("id") is not None else default_id
            value = value.get("box")
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 4:
            raise ConfigError(f"a region box is [x0, y0, x1, y1] in pixels, got {value!r}")
        try:
            box = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"a region box holds four numbers, got {value!r}") from None
        if not all(math.isfinite(v) for v in box):
            raise ConfigError(f"a region box holds four finite numbers, got {value!r}")
        return Region(box, ident)  # type: ignore[arg-type]


RegionsFn = Callable[[np.ndarray, int, float], Iterable]
RegionsArg = Union[None, str, os.PathLike, Sequence, RegionsFn]


class Regions:
    """What ``stream(regions=...)`` takes: a JSON lines path, a list of boxes (zones) or a callable
    ``fn(pixels, frame_index, time) -> boxes``. ``for_frame`` gives a frame's regions."""

    def __init__(self, regions: RegionsArg):
        self._fn = None
        self.zones: list[Region] = []
        self.by_frame: dict[int, list[Region]] = {}
        if callable(regions):
            self._fn = regions
        elif isinstance(regions, (str, os.PathLike)):
            self._read(regions)
        elif regions is not None:
            self.zones = [Region.of(r, f"zone-{i}") for i, r in enumerate(regions)]

    def _read(self, path) -> None:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read regions file {path}: {exc}") from None
        counts: dict[int, int] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "box" not in record:
                raise DataError(f'{path}:{number}: each line is an object with a "box", e.g. {{"box": [0, 0, 64, 64]}}')
            frame = record.get("frame")
            if frame is None:
                self.zones.append(self._region(path, number, record, f"zone-{len(self.zones)}"))
                continue
            if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
                raise DataError(f"{path}:{number}: \"frame\" is a source frame index (0, 1, ...), got {frame!r}")
            n = counts[frame] = counts.get(frame, 0) + 1
            self.by_frame.setdefault(frame, []).append(self._region(path, number, record, f"box-{n - 1}"))

    @staticmethod
    def _region(path, number, record, default_id) -> Region:
        try:
            return Region.of(record, default_id)
        except ConfigError as exc:
            raise DataError(f"{path}:{number}: {exc}") from None

    @property
    def empty(self) -> bool:
        return self._fn is None and not self.zones and not self.by_frame

    def for_frame(self, pixels: np.ndarray, index: int, time: float) -> list[Region]:
        if self._fn is not None:
            found = self._fn(pixels, index, time)
            return [Region.of(r, f"box-{i}") for i, r in enumerate(found or [])]
        return self.zones + self.by_frame.get(index, [])


def crop(pixels: np.ndarray, box: Box) -> np.ndarray | None:
    """The box's pixels, clipped to the frame; None when nothing of it is inside."""
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = box
    left, top = max(0, int(math.floor(min(x0, x1)))), max(0, int(math.floor(min(y0, y1))))
    right, bottom = min(w, int(math.ceil(max(x0, x1)))), min(h, int(math.ceil(max(y0, y1))))
    if right <= left or bottom <= top:
        return None
    return pixels[top:bottom, left:right]
