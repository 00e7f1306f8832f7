"""The event rule on given scores (no video, no model): thresholds, negatives, hysteresis, regions, end."""

import json

import pytest

from vledge.errors import ConfigError
from vledge.events import Event, EventConfig, EventRule, EventTracker, Observation


def feed(tracker, scores_per_frame, period=0.5, region=None):
    """Run frames at ``period`` seconds; returns [(kind, label, time, frame, since)]."""
    out = []
    for i, scores in enumerate(scores_per_frame):
        obs = [] if scores is None else [Observation(scores, region)]
        out += [(e.kind, e.label, e.time, e.frame, e.since) for e in tracker.update(i * period, i, obs)]
    return out


def test_enter_after_and_leave_after_are_measured_from_the_first_frame_of_each_run():
    tracker = EventTracker(EventConfig((EventRule("a person", 0.6, enter_after=1.0, leave_after=1.5),)))
    hi, lo = {"a person": 0.9}, {"a person": 0.1}
    # frames at 0.0, 0.5, ...: a 0.5 s blip (too short), then a run of hits from t=2.0, misses from t=5.0
    scores = [lo, hi, lo, lo, hi, hi, hi, hi, hi, hi, lo, hi, lo, lo, lo, lo, lo]
    assert feed(tracker, scores) == [
        ("enter", "a person", 3.0, 6, 2.0),  # hits at 2.0, 2.5, 3.0: 1.0 s after the first
        ("leave", "a person", 7.5, 15, 6.0),  # the miss at 5.0 was broken by a hit at 5.5; misses from 6.0
    ]
    assert tracker.active == []


def test_zero_durations_enter_and_leave_at_once():
    tracker = EventTracker(EventConfig.simple(["x"], threshold=0.5))
    assert feed(tracker, [{"x": 0.4}, {"x": 0.5}, {"x": 0.49}]) == [("enter", "x", 0.5, 1, 0.5),
                                                                     ("leave", "x", 1.0, 2, 1.0)]


def test_a_negative_prompt_that_scores_higher_suppresses_the_hit():
    config = EventConfig.simple(["a person"], threshold=0.3, negatives=["a shadow"])
    tracker = EventTracker(config)
    frames = [{"a person": 0.4, "a shadow": 0.6}, {"a person": 0.6, "a shadow": 0.4}]
    assert feed(tracker, frames) == [("enter", "a person", 0.5, 1, 0.5)]
    assert config.labels == ["a person", "a shadow"]


def test_leave_threshold_below_threshold_is_hysteresis_on_the_score():
    tracker = EventTracker(EventConfig((EventRule("x", 0.7, leave_threshold=0.4),)))
    assert feed(tracker, [{"x": 0.8}, {"x": 0.5}, {"x": 0.45}, {"x": 0.3}]) == [
        ("enter", "x", 0.0, 0, 0.0), ("leave", "x", 1.5, 3, 1.5)]


def test_regions_are_tracked_apart_and_a_missing_region_counts_as_a_miss():
    tracker = EventTracker(EventConfig((EventRule("car", 0.5, leave_after=0.5),)))
    e0 = tracker.update(0.0, 0, [Observation({"car": 0.9}, "a", (0, 0, 10, 10)), Observation({"car": 0.1}, "b")])
    assert [(e.kind, e.region, e.box) for e in e0] == [("enter", "a", (0, 0, 10, 10))]
    e1 = tracker.update(0.5, 1, [Observation({"car": 0.9}, "b")])  # "a" is gone: its first miss
    assert [(e.kind, e.region) for e in e1] == [("enter", "b")]
    e2 = tracker.update(1.0, 2, [Observation({"car": 0.9}, "b")])
    assert [(e.kind, e.region, e.since) for e in e2] == [("leave", "a", 0.5)]


def test_close_leaves_every_active_event_with_reason_end_and_its_peak():
    tracker = EventTracker(EventConfig.simple(["x", "y"], threshold=0.5, leave_after=10))
    tracker.update(0.0, 0, [Observation({"x": 0.6, "y": 0.55})])
    tracker.update(1.0, 4, [Observation({"x": 0.8, "y": 0.1})])
    closing = tracker.close()
    assert [(e.kind, e.label, e.time, e.frame, e.reason, e.peak) for e in closing] == [
        ("leave", "x", 1.0, 4, "end", 0.8), ("leave", "y", 1.0, 4, "end", 0.55)]
    assert tracker.close() == []


def test_event_json_line_has_the_documented_fields():
    event = Event("leave", "a person", 2.5, 60, 0.12, 1.5, "door", (1.0, 2.0, 3.0, 4.0), peak=0.9, reason="below")
    record = json.loads(event.to_json())
    assert record == {"kind": "leave", "label": "a person", "time": 2.5, "frame": 60, "score": 0.12, "since": 1.5,
                      "region": "door", "box": [1.0, 2.0, 3.0, 4.0], "peak": 0.9, "reason": "below"}


def test_frames_out_of_time_order_are_refused():
    tracker = EventTracker(EventConfig.simple(["x"]))
    tracker.update(1.0, 1, [])
    with pytest.raises(ConfigError, match="time order"):
        tracker.update(0.5, 2, [])


@pytest.mark.parametrize("kwargs, message", [
    ({"label": ""}, "non-empty label"),
    ({"label": "x", "threshold": 1.5}, "threshold must be in"),
    ({"label": "x", "enter_after": -1}, "must not be negative"),
    ({"label": "x", "threshold": "high"}, "must be a number"),
    ({"label": "x", "threshold": 0.5, "leave_threshold": 0.6}, "leave_threshold"),
])
def test_bad_rules_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EventRule(**kwargs)


def test_config_from_dict_round_trips_and_rejects_overlaps():
    config = EventConfig.from_dict({"rules": [{"label": "x", "threshold": 0.7, "enter_after": 2}], "negatives": ["y"]})
    assert EventConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="both labels of interest and negatives"):
        EventConfig.simple(["x"], negatives=["x"])
    with pytest.raises(ConfigError, match="unknown event rule field"):
        EventConfig.from_dict({"rules": [{"label": "x", "treshold": 0.7}]})
    with pytest.raises(ConfigError, match="at least one label"):
        EventConfig(())
