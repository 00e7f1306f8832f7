"""Video sources through PyAV (the ``video`` extra): files, RTSP/HTTP URLs, V4L2 cameras, file objects.

``VideoSource.frames`` decodes, samples at a rate and yields RGB frames with their media time; it
runs in the decoder thread (``vledge.video.stream``). PyAV is imported when a source opens.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from vledge.errors import ConfigError, StreamError, require

log = logging.getLogger(__name__)

NETWORK = re.compile(r"^(rtsps?|rtmps?|https?|udp|tcp|srt|rtp)://", re.IGNORECASE)
MAX_BAD_PACKETS = 100  # consecutive packets that fail to decode before the source is given up


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` counts every decoded frame of the source, sampled or not."""

    index: int
    time: float  # media seconds since the first frame
    wall: float  # unix time it was decoded
    captured: float  # time.perf_counter() when decoded: where latency is measured from
    pixels: np.ndarray  # (H, W, 3) uint8 RGB


def source_kind(source) -> str:
    """``"file"``, ``"url"`` (network), ``"device"`` (V4L2) or ``"stream"`` (a file object)."""
    if hasattr(source, "read"):
        return "stream"
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return "device"
    text = os.fspath(source)
    if NETWORK.match(text):
        return "url"
    if text.startswith("/dev/video"):
        return "device"
    return "file"


class VideoSource:
    """A video to decode. ``live`` (default: True for URLs and cameras) means frames arrive at the
    source's pace, so a slow consumer loses the older ones; a file is read at the consumer's pace
    unless ``realtime`` paces it by its timestamps as if it were a camera.

    ``fps`` keeps frames on a grid of ``1/fps`` seconds of media time (None: every frame).
    ``timeout`` bounds opening and each read of a network source; ``reconnect`` is how many times a
    live source is opened again after it fails or ends (with a doubling wait, at most 30 s).
    """

    def __init__(self, source: str | os.PathLike | int | BinaryIO, *, fps: float | None = None,
                 live: bool | None = None, realtime: bool = False, timeout: float = 10.0, reconnect: int = 0,
                 format: str | None = None, options: dict | None = None):
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
            raise ConfigError(f"fps must be a positive number, got {fps!r}")
        if reconnect < 0 or timeout <= 0:
            raise ConfigError("reconnect must be >= 0 and timeout > 0")
        self.source = source
        self.kind = source_kind(source)
        self.live = self.kind in ("url", "device") if live is None else bool(live)
        self.realtime = bool(realtime)
        self.fps = fps
        self.timeout = float(timeout)
        self.reconnect = int(reconnect)
        self.format = format
        self.options = {k: str(v) for k, v in (options or {}).items()}
        self.decoded = 0  # every decoded frame
        self.bad_packets = 0
        self.reconnects = 0

    def __str__(self) -> str:
        return "<file object>" if self.kind == "stream" else str(self.source)

    def _open(self):
        av = require("av", "video")
        kwargs: dict = {"options": dict(self.options)}
        target = self.source
        if self.kind == "device":
            target = f"/dev/video{self.source}" if str(self.source).isdigit() else os.fspath(self.source)
            kwargs["format"] = self.format or "v4l2"
        elif self.kind == "url":
            target = os.fspath(self.source)
            kwargs["timeout"] = (self.timeout, self.timeout)
            if target.lower().startswith("rtsp"):
                kwargs["options"].setdefault("rtsp_transport", "tcp")  # UDP loses packets on busy networks
        elif self.kind == "file":
            target = os.fspath(self.source)
            if not os.path.exists(target):
                raise StreamError(f"video source {target} not found")
        if self.format and "format" not in kwargs:
            kwargs["format"] = self.format
        try:
            container = av.open(target, mode="r", **kwargs)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise StreamError(f"cannot open video source {self}: {_reason(exc)}") from None
        if not container.streams.video:
            container.close()
            raise StreamError(f"video source {self} has no video stream")
        return container

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Sampled frames until the source ends or ``stop`` is set; raises StreamError when it fails."""
        state = _Clock(self.fps)
        attempts = 0
        while not stop.is_set():
            failure = None
            try:
                container = self._open()
            except StreamError as exc:
                failure, container = exc, None
            if container is not None:
                try:
                    for frame in self._decode(container, stop, state):
                        attempts = 0
                        yield frame
                except StreamError as exc:
                    failure = exc
                finally:
                    container.close()
            if stop.is_set() or not self.live or attempts >= self.reconnect:
                if failure is not None:
                    raise failure
                return
            attempts += 1
            self.reconnects += 1
            wait = min(30.0, 0.5 * 2 ** (attempts - 1))
            log.warning("%s: %s; opening it again in %.1f s (attempt %d of %d)", self,
                        failure or "the stream ended", wait, attempts, self.reconnect)
            state.resume()
            stop.wait(wait)

    def _decode(self, container, stop: threading.Event, clock: "_Clock") -> Iterator[Frame]:
        av = require("av", "video")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None
        bad = 0
        started = None
        demuxed = container.demux(stream)
        while not stop.is_set():
            try:
                packet = next(demuxed)
            except StopIteration:
                if not self.live:
                    self._check_complete(container, stream, clock, rate)
                return
            except (av.FFmpegError, OSError) as exc:
                reason = f"reading {self} failed after {self.decoded} frames: {_reason(exc)}"
                if self.live or self.decoded == 0:
                    raise StreamError(reason) from None
                log.warning("%s; the file ends here", reason)  # a truncated file: keep what was decoded
                return
            try:
                decoded = packet.decode()
                bad = 0
            except (av.FFmpegError, OSError) as exc:
                bad += 1
                self.bad_packets += 1
                if self.bad_packets <= 3:
                    log.warning("%s: a damaged packet was skipped (%s)", self, _reason(exc))
                if bad >= MAX_BAD_PACKETS:
                    raise StreamError(f"{self}: {bad} packets in a row failed to decode; giving up") from None
                continue
            for frame in decoded:
                index = self.decoded
                self.decoded += 1
                t = clock.media_time(frame.time, index, rate)
                if not clock.keep(t):
                    continue
                if self.realtime:  # a file played as a camera: wait for the frame's moment
                    started = started or (time.perf_counter() - t)
                    delay = started + t - time.perf_counter()
                    if delay > 0 and stop.wait(delay):
                        return
                pixels = frame.to_ndarray(format="rgb24")
                yield Frame(index, t, time.time(), time.perf_counter(), pixels)


    def _check_complete(self, container, stream, clock: "_Clock", rate: float | None) -> None:
        """Warn when a file ends well before the duration it declares: it was cut short or is damaged there."""
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            declared = container.duration / 1e6  # AV_TIME_BASE
        period = 1.0 / rate if rate else 0.04
        if declared and clock.last > -math.inf and clock.last + 2.5 * period < declared:
            log.warning("%s ends at %.2f s but declares %.2f s: it is truncated or damaged there; "
                        "the frames after that point are missing", self, clock.last + period, declared)


class _Clock:
    """Media time relative to the first frame, continued across reconnects, and the sampling grid."""

    def __init__(self, fps: float | None):
        self.period = 1.0 / fps if fps else None
        self.first: float | None = None
        self.offset = 0.0
        self.last = -math.inf
        self.next = 0.0

    def media_time(self, pts_time: float | None, index: int, rate: float | None) -> float:
        if pts_time is None:  # no timestamps: count frames at the nominal rate
            pts_time = index / rate if rate else time.perf_counter()
        if self.first is None:
            self.first = pts_time - self.offset
        t = max(pts_time - self.first, self.last)  # never backwards, even on a broken stream
        self.last = t
        return t

    def resume(self) -> None:
        """After a reconnect the new timestamps start again: continue after the last frame."""
        self.offset = self.last + (self.period or 0.04) if self.last > -math.inf else 0.0
        self.first = None

    def keep(self, t: float) -> bool:
        if self.period is None:
            return True
        if t < self.next - 1e-6:
            return False
        self.next = (math.floor((t + 1e-6) / self.period) + 1) * self.period
        return True


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."
