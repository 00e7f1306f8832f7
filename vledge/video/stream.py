"""``vledge.stream``: classify the frames of a video source as they come, with optional regions and events.

A decoder thread hands frames to the inference loop through a one-item slot. A live source (a
camera, a URL) never waits for inference: a frame not taken in time is replaced by the newer one
and counted as dropped, so latency stays bounded by about one inference. A file is read at the
loop's pace and its sampled frames are classified in batches when batching is faster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from vledge.errors import ConfigError, MissingDependencyError, StreamError, require
from vledge.events import Event, EventConfig, EventTracker, Observation
from vledge.video.regions import Box, Regions, RegionsArg, crop
from vledge.video.slot import LatestSlot
from vledge.video.source import Frame, VideoSource

log = logging.getLogger(__name__)

AUTO_BATCH = 8  # the batch tried against batch 1 when batch_size is None
_ALL = 1_000_000  # top_k that keeps every label


@dataclass(frozen=True)
class RegionScores:
    """Every label's probability for one region (``region=None``: the whole frame)."""

    region: str | None
    box: Box | None
    scores: dict[str, float]

    @property
    def top(self) -> tuple[str, float]:
        """The best (label, probability) of this region."""
        return max(self.scores.items(), key=lambda kv: kv[1])


@dataclass(frozen=True)
class FrameResult:
    """One classified frame. The last result of a stream has ``final=True``, no regions, and the
    leave events of whatever was still active when it ended."""

    index: int
    time: float
    wall: float
    latency: float  # seconds from decoding the frame to this result
    regions: list[RegionScores]
    events: list[Event] = field(default_factory=list)
    final: bool = False

    def to_dict(self) -> dict:
        """Plain JSON-ready values (one JSON line of ``vledge watch``)."""
        return {
            "frame": self.index, "time": round(self.time, 6), "wall": round(self.wall, 3),
            "latency_ms": round(self.latency * 1e3, 2), "final": self.final,
            "regions": [{"region": r.region, "box": list(r.box) if r.box else None,
                         "scores": {k: round(v, 6) for k, v in r.scores.items()}} for r in self.regions],
            "events": [e.to_dict() for e in self.events],
        }


@dataclass
class StreamStats:
    """Counters of a running stream; ``snapshot()`` adds rates and latency percentiles."""

    decoded: int = 0  # frames the source decoded (sampled or not)
    processed: int = 0  # frames classified
    dropped: int = 0  # sampled frames replaced by a newer one before inference took them
    batches: int = 0
    bad_packets: int = 0
    reconnects: int = 0
    started: float = field(default_factory=time.perf_counter)
    latencies: deque = field(default_factory=lambda: deque(maxlen=256))

    def snapshot(self) -> dict:
        """The counters with fps, latency p50/max (ms) and seconds since the start."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        lat = sorted(self.latencies)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3, 2)) if lat else (lambda q: None)
        return {"decoded": self.decoded, "processed": self.processed, "dropped": self.dropped,
                "batches": self.batches, "bad_packets": self.bad_packets, "reconnects": self.reconnects,
                "fps": round(self.processed / elapsed, 2), "latency_p50_ms": pick(0.5),
                "latency_max_ms": round(lat[-1] * 1e3, 2) if lat else None, "seconds": round(elapsed, 3)}


class _End:
    def __init__(self, error: Exception | None = None):
        self.error = error


class Stream:
    """An iterator of :class:`FrameResult` over a video source; see :func:`vledge.stream`."""

    def __init__(self, model, source, *, labels: Sequence[str] | None = None, templates: Sequence[str] | None = None,
                 events: EventConfig | None = None, fps: float | None = None, regions: RegionsArg = None,
                 whole_frame: bool | None = None, batch_size: int | None = None, live: bool | None = None,
                 realtime: bool = False, timeout: float = 10.0, reconnect: int = 0, log_every: float = 10.0,
                 format: str | None = None, options: dict | None = None):
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        require("av", "video")  # before any thread starts: a missing extra is named at once
        self.model = model
        self.source = source if isinstance(source, VideoSource) else VideoSource(
            source, fps=fps, live=live, realtime=realtime, timeout=timeout, reconnect=reconnect, format=format,
            options=options)
        self.events_config = events
        self.labels = _labels(labels, events)
        self.templates = list(templates) if templates is not None else None
        self.regions = Regions(regions)
        self.whole_frame = self.regions.empty if whole_frame is None else bool(whole_frame)
        if not self.whole_frame and self.regions.empty:
            raise ConfigError("whole_frame=False needs regions to classify")
        self.batch_size = batch_size
        self.log_every = log_every
        self.stats = StreamStats()
        self._tracker = EventTracker(events) if events is not None else None
        self._stop = threading.Event()
        self._slot: LatestSlot = LatestSlot()
        self._thread: threading.Thread | None = None
        self._iterating = False
        if self.labels is not None:
            model.classify(np.zeros((8, 8, 3), np.uint8), self.labels, top_k=1, templates=self.templates)  # embeds once

    def __iter__(self) -> Iterator[FrameResult]:
        if self._iterating or self._thread is not None:
            raise ConfigError("a Stream can be iterated once; make a new one with vledge.stream(...)")
        self._iterating = True
        return self._run()

    def events(self) -> Iterator[Event]:
        """Only the events, in order (the stream's frames are still all classified)."""
        for result in self:
            yield from result.events

    def close(self) -> None:
        """Stop decoding and release the source (also done when iteration ends or breaks off)."""
        self._stop.set()
        self._slot.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.source.timeout + 2)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _decode(self) -> None:
        try:
            for frame in self.source.frames(self._stop):
                if not self._slot.put(frame, block=not self.source.live):
                    return
            self._slot.put(_End(), block=True)
        except (StreamError, MissingDependencyError) as exc:
            self._slot.put(_End(exc), block=True)
        except Exception as exc:  # a decoder bug must end the stream with a named error, not hang it
            log.exception("the decoder thread failed")
            self._slot.put(_End(StreamError(f"decoding {self.source} failed: {type(exc).__name__}: {exc}")), block=True)

    def _run(self) -> Iterator[FrameResult]:
        batch = self._choose_batch()
        self._thread = threading.Thread(target=self._decode, name="vledge-decoder", daemon=True)
        self._thread.start()
        last_log = time.perf_counter()
        last: Frame | None = None
        try:
            while True:
                frames, end = self._take(batch)
                if frames:
                    last = frames[-1]
                    yield from self._classify(frames)
                if time.perf_counter() - last_log >= self.log_every:
                    last_log = time.perf_counter()
                    self._log_stats()
                if end is not None:
                    if end.error is not None:
                        raise end.error
                    break
            if self._tracker is not None and last is not None:
                closing = self._tracker.close()
                if closing:
                    yield FrameResult(last.index, last.time, time.time(), 0.0, [], closing, final=True)
        finally:
            self.close()
            self._sync_counts()
            self._log_stats()

    def _take(self, batch: int) -> tuple[list[Frame], _End | None]:
        frames: list[Frame] = []
        stall = self.source.timeout + (1.0 / self.source.fps if self.source.fps else 0.0) + 1.0
        waited = time.perf_counter()
        while len(frames) < batch:
            got, item = self._slot.get(timeout=0.25)
            if not got:
                alive = self._thread is not None and self._thread.is_alive()
                if not alive and not self._slot.closed:
                    got, item = self._slot.get(timeout=0)  # the end marker may have just arrived
                    if not got:
                        return frames, _End(StreamError(f"the decoder of {self.source} stopped without a word"))
                elif self._stop.is_set():
                    return frames, _End()
                elif frames and self.source.live:
                    return frames, None
                elif time.perf_counter() - waited > stall:
                    return frames, _End(StreamError(f"no frame from {self.source} for {stall:.0f} s; it stalled"))
                else:
                    continue
            if isinstance(item, _End):
                return frames, item
            frames.append(item)
            waited = time.perf_counter()
            if self.source.live:
                break  # a live frame is classified at once: waiting for a batch would add latency
        return frames, None

    def _classify(self, frames: list[Frame]) -> Iterator[FrameResult]:
        images, slots = [], []
        for frame in frames:
            regions = [(None, None, frame.pixels)] if self.whole_frame else []
            for region in self.regions.for_frame(frame.pixels, frame.index, frame.time):
                pixels = crop(frame.pixels, region.box)
                if pixels is None:
                    log.debug("frame %d: region %s lies outside the frame", frame.index, region.id)
                    continue
                regions.append((region.id, region.box, pixels))
            slots.append([(rid, box) for rid, box, _ in regions])
            images.extend(pixels for _, _, pixels in regions)
        ranked = self.model.classify(images, self.labels, top_k=_ALL, templates=self.templates) if images else []
        self.stats.batches += 1
        at = 0
        for frame, frame_slots in zip(frames, slots):
            scores = [RegionScores(rid, box, dict(ranked[at + i].top)) for i, (rid, box) in enumerate(frame_slots)]
            at += len(frame_slots)
            events = []
            if self._tracker is not None:
                observations = [Observation(s.scores, s.region, s.box) for s in scores]
                events = self._tracker.update(frame.time, frame.index, observations, wall=frame.wall)
            latency = time.perf_counter() - frame.captured
            self.stats.processed += 1
            self.stats.latencies.append(latency)
            self._sync_counts()
            yield FrameResult(frame.index, frame.time, frame.wall, latency, scores, events)

    def _choose_batch(self) -> int:
        if self.source.live:
            return 1
        if self.batch_size is not None:
            return self.batch_size
        first = next(iter(self.model.runtime.input_shapes("image").values()))
        if first and isinstance(first[0], int):  # a static-batch tower (an NPU): its own batch
            return first[0]
        return _faster_batch(self.model)

    def _sync_counts(self) -> None:
        self.stats.decoded = self.source.decoded
        self.stats.dropped = self._slot.dropped
        self.stats.bad_packets = self.source.bad_packets
        self.stats.reconnects = self.source.reconnects

    def _log_stats(self) -> None:
        s = self.stats.snapshot()
        log.info("%s: %d frames classified, %.1f fps, latency p50 %s ms, max %s ms, %d dropped", self.source,
                 s["processed"], s["fps"], s["latency_p50_ms"], s["latency_max_ms"], s["dropped"])


def _labels(labels, events: EventConfig | None) -> list[str] | None:
    if labels is not None and (isinstance(labels, str) or not all(isinstance(x, str) for x in labels)):
        raise ConfigError("labels must be a list of strings, e.g. ['a person', 'a car']")
    if events is None:
        scored = list(labels) if labels is not None else None
    else:
        scored = list(dict.fromkeys(events.labels + list(labels or [])))
    if scored is not None and len(set(scored)) < 2:
        raise ConfigError(
            f"only {scored} would be scored: one label alone has probability 1 on every frame; add negatives "
            "(e.g. 'an empty room') or more labels"
        )
    return scored


def _faster_batch(model) -> int:
    """AUTO_BATCH when one call on that many frames beats as many calls on one (per frame, by 10%), else 1."""
    size = model.manifest.preprocess.image_size
    pixels = np.zeros((AUTO_BATCH, 3, size, size), np.float32)

    def best(fn, repeats=3) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    model.encode_pixels(pixels)  # warm-up
    one = best(lambda: [model.encode_pixels(pixels[i : i + 1]) for i in range(AUTO_BATCH)])
    many = best(lambda: model.encode_pixels(pixels))
    batch = AUTO_BATCH if many < 0.9 * one else 1
    log.info("stream batch %d (batch %d: %.2f ms a frame, batch 1: %.2f ms)", batch, AUTO_BATCH,
             many / AUTO_BATCH * 1e3, one / AUTO_BATCH * 1e3)
    return batch
