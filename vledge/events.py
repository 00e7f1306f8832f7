"""Events from per-frame scores: labels of interest with thresholds, negative prompts, hysteresis.

Pure logic, no video and no model: ``EventTracker.update`` takes one frame's scores per region and
returns the events decided at that frame. Times are the frames' media times in seconds, so a file
gives the same events however fast it is processed.

The rule, per (label, region):

- a frame is a *hit* when the label's score is at least its ``threshold`` (``leave_threshold`` while
  the event is active) and higher than the score of every negative prompt;
- ``enter`` is emitted at the first frame whose time is at least ``enter_after`` seconds after the
  first hit of an unbroken run of hits (``enter_after=0``: at the first hit);
- ``leave`` is emitted at the first frame whose time is at least ``leave_after`` seconds after the
  first miss of an unbroken run of misses; a region that an update does not mention is a miss;
- when the stream ends, every active event leaves at once (``reason="end"``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

from vledge.errors import ConfigError

WHOLE_FRAME = None  # the region key of a whole-frame score


@dataclass(frozen=True)
class EventRule:
    """When ``label`` is an event: its score threshold and how long it must hold to enter and to leave."""

    label: str
    threshold: float = 0.5
    enter_after: float = 0.0  # seconds of hits before "enter"
    leave_after: float = 0.0  # seconds of misses before "leave"
    leave_threshold: float | None = None  # a lower threshold while active (None: the same as threshold)

    def __post_init__(self):
        if not isinstance(self.label, str) or not self.label.strip():
            raise ConfigError(f"an event rule needs a non-empty label, got {self.label!r}")
        for name in ("threshold", "enter_after", "leave_after", "leave_threshold"):
            value = getattr(self, name)
            if value is None and name == "leave_threshold":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"event rule {self.label!r}: {name} must be a number, got {value!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"event rule {self.label!r}: threshold must be in [0, 1], got {self.threshold}")
        if self.enter_after < 0 or self.leave_after < 0:
            raise ConfigError(f"event rule {self.label!r}: enter_after and leave_after must not be negative")
        if self.leave_threshold is not None and not 0.0 <= self.leave_threshold <= self.threshold:
            raise ConfigError(
                f"event rule {self.label!r}: leave_threshold must be in [0, threshold={self.threshold}], "
                f"got {self.leave_threshold}"
            )

    @property
    def stay_threshold(self) -> float:
        return self.threshold if self.leave_threshold is None else self.leave_threshold


@dataclass(frozen=True)
class EventConfig:
    """The rules, and the negative prompts: labels scored with the others that suppress a hit when they win."""

    rules: tuple[EventRule, ...]
    negatives: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "negatives", tuple(self.negatives))
        if not self.rules:
            raise ConfigError("events need at least one label of interest")
        if isinstance(self.negatives, str) or not all(isinstance(n, str) and n.strip() for n in self.negatives):
            raise ConfigError("negatives must be a list of non-empty label strings")
        labels = [r.label for r in self.rules]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"a label has two event rules: {sorted(x for x in set(labels) if labels.count(x) > 1)}")
        both = sorted(set(labels) & set(self.negatives))
        if both:
            raise ConfigError(f"{both} are both labels of interest and negatives; keep each label in one list")

    @property
    def labels(self) -> list[str]:
        """Every label to score, labels of interest first, then the negatives."""
        return [r.label for r in self.rules] + list(self.negatives)

    @classmethod
    def simple(cls, labels: Sequence[str], threshold: float = 0.5, enter_after: float = 0.0,
               leave_after: float = 0.0, negatives: Sequence[str] = ()) -> "EventConfig":
        """The same threshold and durations for every label of interest."""
        return cls(tuple(EventRule(label, threshold, enter_after, leave_after) for label in labels), tuple(negatives))

    @classmethod
    def from_dict(cls, data: Mapping) -> "EventConfig":
        """From ``{"rules": [{"label": ..., "threshold": ...}, ...], "negatives": [...]}``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("rules"), list):
            raise ConfigError('an events file holds {"rules": [{"label": "a person", "threshold": 0.6}, ...], '
                              '"negatives": [...]}')
        rules = []
        for entry in data["rules"]:
            if not isinstance(entry, Mapping):
                raise ConfigError(f"each event rule is an object with a label, got {entry!r}")
            unknown = sorted(set(entry) - set(EventRule.__dataclass_fields__))
            if unknown:
                raise ConfigError(f"unknown event rule field(s) {unknown}; known: {sorted(EventRule.__dataclass_fields__)}")
            rules.append(EventRule(**entry))
        return cls(tuple(rules), tuple(data.get("negatives") or ()))

    def to_dict(self) -> dict:
        return {"rules": [asdict(r) for r in self.rules], "negatives": list(self.negatives)}


@dataclass(frozen=True)
class Event:
    """One decision: ``kind`` is ``"enter"`` or ``"leave"``; ``since`` is the time of the run's first frame."""

    kind: str
    label: str
    time: float
    frame: int
    score: float  # the label's score at this frame
    since: float
    region: str | None = None
    box: tuple[float, float, float, float] | None = None
    peak: float | None = None  # leave only: the highest score while active
    reason: str | None = None  # leave only: "below" or "end"
    wall: float | None = field(default=None, compare=False)  # unix time the frame was captured, where known

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "label": self.label, "time": round(self.time, 6), "frame": self.frame,
             "score": round(self.score, 6), "since": round(self.since, 6), "region": self.region,
             "box": list(self.box) if self.box is not None else None}
        if self.kind == "leave":
            d["peak"] = None if self.peak is None else round(self.peak, 6)
            d["reason"] = self.reason
        if self.wall is not None:
            d["wall"] = round(self.wall, 3)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass
class _State:
    active: bool = False
    run_start: float | None = None  # first frame time of the current run of the opposite kind
    peak: float = 0.0


@dataclass(frozen=True)
class Observation:
    """One region's scores at one frame (``region=None``: the whole frame)."""

    scores: Mapping[str, float]
    region: str | None = WHOLE_FRAME
    box: tuple[float, float, float, float] | None = None


class EventTracker:
    """The hysteresis state of every (label, region) seen; feed it frames in time order."""

    def __init__(self, config: EventConfig):
        self.config = config
        self._states: dict[tuple[str, str | None], _State] = {}
        self._boxes: dict[str | None, tuple | None] = {}
        self._last: tuple[float, int] | None = None

    def update(self, time: float, frame: int, observations: Iterable[Observation], wall: float | None = None) -> list[Event]:
        """The events decided at this frame, enters and leaves in rule order."""
        if self._last is not None and time < self._last[0]:
            raise ConfigError(f"frames must come in time order: {time} after {self._last[0]}")
        self._last = (time, frame)
        seen: dict[str | None, Observation] = {}
        for obs in observations:
            seen[obs.region] = obs
            self._boxes[obs.region] = obs.box
        events = []
        regions = list(seen) + [r for (_, r), s in self._states.items() if s.active and r not in seen]
        for rule in self.config.rules:
            for region in dict.fromkeys(regions):
                obs = seen.get(region)
                score = float(obs.scores.get(rule.label, 0.0)) if obs else 0.0
                event = self._step(rule, region, obs, score, time, frame, wall)
                if event is not None:
                    events.append(event)
        return events

    def _step(self, rule: EventRule, region, obs, score: float, time: float, frame: int, wall) -> Event | None:
        key = (rule.label, region)
        state = self._states.get(key)
        if state is None:
            if obs is None:
                return None
            state = self._states[key] = _State()
        top_negative = max((float(obs.scores.get(n, 0.0)) for n in self.config.negatives), default=-1.0) if obs else 0.0
        limit = rule.stay_threshold if state.active else rule.threshold
        hit = obs is not None and score >= limit and score > top_negative
        if state.active:
            state.peak = max(state.peak, score) if hit else state.peak
        if hit == state.active:  # the run of the opposite kind, if any, is broken
            state.run_start = None
            return None
        if state.run_start is None:
            state.run_start = time
        wait = rule.leave_after if state.active else rule.enter_after
        if time - state.run_start < wait - 1e-9:  # 1e-9: media times are sums of float frame intervals
            return None
        since, state.run_start = state.run_start, None
        box = self._boxes.get(region)
        if not state.active:
            state.active, state.peak = True, score
            return Event("enter", rule.label, time, frame, score, since, region, box, wall=wall)
        state.active = False
        return Event("leave", rule.label, time, frame, score, since, region, box, peak=state.peak, reason="below",
                     wall=wall)

    def close(self, time: float | None = None, frame: int | None = None) -> list[Event]:
        """End of the stream: a leave (``reason="end"``) for every active event, at the last frame seen."""
        if self._last is None:
            return []
        time = self._last[0] if time is None else time
        frame = self._last[1] if frame is None else frame
        events = []
        for rule in self.config.rules:
            for (label, region), state in self._states.items():
                if label == rule.label and state.active:
                    state.active, state.run_start = False, None
                    events.append(Event("leave", label, time, frame, 0.0, time, region, self._boxes.get(region),
                                        peak=state.peak, reason="end"))
        return events

    @property
    def active(self) -> list[tuple[str, str | None]]:
        """The (label, region) pairs whose event is active now."""
        return [key for key, state in self._states.items() if state.active]
