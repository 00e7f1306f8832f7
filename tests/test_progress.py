"""Progress without a terminal: a start line, periodic lines every 25 s (never 30 s apart), an end line."""

import logging

from vledge import progress
from vledge.progress import PlainProgress, progress_bar


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def run_steps(step_seconds, total, **kwargs):
    clock, lines = FakeClock(), []
    p = PlainProgress("distil", total, "steps", clock=clock, emit=lines.append, **kwargs)
    p.start()
    for seconds in step_seconds:
        clock.now += seconds
        p.advance()
    p.finish()
    return lines, clock


def test_start_line_says_what_and_how_many_and_the_estimate():
    lines, _ = run_steps([], 120, estimate_s=95)
    assert lines[0] == "distil: started, 120 steps, about 0:01:35"


def test_a_line_ten_seconds_in_then_every_25_s_with_percent_rate_and_eta():
    lines, _ = run_steps([2.0] * 60, 60)  # 2 s a step, 120 s in all
    periodic = lines[1:-1]
    assert periodic[0] == "distil: 5/60 steps (8%), 0.50 steps/s, 0:01:50 left, 0:00:10 elapsed"
    assert len(periodic) == 5  # at 10 s, then at the first step 25 s after the last line: 36, 62, 88, 114 s
    assert periodic[1].startswith("distil: 18/60 steps (30%), 0.50 steps/s, 0:01:24 left")
    assert lines[-1] == "distil: done, 60 steps in 0:02:00 (0.50 steps/s)"


def test_gaps_between_lines_stay_under_thirty_seconds_of_steady_work():
    clock, stamps = FakeClock(), []
    p = PlainProgress("eval", 1000, "batches", clock=clock, emit=lambda line: stamps.append(clock.now))
    p.start()
    for _ in range(1000):
        clock.now += 0.7
        p.advance()
    p.finish()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert len(gaps) > 20 and max(gaps) <= 25.7


def test_slow_steps_read_as_seconds_each():
    lines, _ = run_steps([40.0, 40.0], 10)
    assert lines[1] == "distil: 1/10 steps (10%), 40.0 s each, 0:06:00 left, 0:00:40 elapsed"


def test_tick_without_progress_reports_that_no_estimate_exists_yet():
    clock, lines = FakeClock(), []
    p = PlainProgress("teacher cache", 8, "batches", clock=clock, emit=lines.append)
    p.start()
    clock.now += 11
    p.tick()
    assert lines[1] == ("teacher cache: 0/8 batches (0%), 0.00 batches/s, no estimate yet (first one still running), "
                        "0:00:11 elapsed")


def test_unknown_total_counts_only():
    lines, _ = run_steps([11.0], None)
    assert lines[0] == "distil: started, steps until done"
    assert lines[1].startswith("distil: 1 step, ")


def test_a_consumer_that_stops_early_gets_a_stopped_line(monkeypatch, caplog):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="vledge.progress"):
        bar = progress_bar(range(10), desc="epoch 1/3")
        it = iter(bar)
        for _ in range(4):
            next(it)
        it.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "vledge.progress"]
    assert messages[0] == "epoch 1/3: started, 10 steps"
    assert messages[-1].startswith("epoch 1/3: stopped at 3/10 steps after ")


def test_without_a_terminal_every_item_comes_through_with_start_and_end_lines(monkeypatch, caplog):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="vledge.progress"):
        assert list(progress_bar(range(5), desc="eval", unit="batches")) == [0, 1, 2, 3, 4]
    messages = [r.getMessage() for r in caplog.records if r.name == "vledge.progress"]
    assert messages[0] == "eval: started, 5 batches"
    assert messages[-1].startswith("eval: done, 5 batches in ")


def test_one_is_singular():
    lines, _ = run_steps([1.0], 1)
    assert lines[0] == "distil: started, 1 step" and lines[-1].startswith("distil: done, 1 step in ")
    clock, said = FakeClock(), []
    PlainProgress("eval", 1, "batches", clock=clock, emit=said.append).start()
    assert said == ["eval: started, 1 batch"]


def test_disabled_returns_the_items_themselves():
    items = [1, 2, 3]
    assert progress_bar(items, enabled=False) is items


def test_the_heartbeat_reports_while_one_item_is_slow():
    clock, lines = FakeClock(), []
    p = PlainProgress("distil", 4, clock=clock, emit=lines.append, first_s=0.05, every_s=0.05)
    p.start()
    beat = progress.Heartbeat(p)
    import time

    clock.now += 60
    deadline = time.monotonic() + 5
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.stop()
    assert len(lines) >= 2 and lines[1].startswith("distil: 0/4 steps (0%)")


def test_a_consumer_that_takes_each_step_without_asking_past_the_last_gets_done(monkeypatch, caplog):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="vledge.progress"):
        steps = iter(progress_bar(range(3), desc="epoch 1/3"))
        for _ in range(3):  # the training loop's pattern: next(steps, None) at the start of each step
            next(steps, None)
        steps.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "vledge.progress"]
    assert messages[-1].startswith("epoch 1/3: done, 3 steps in ") and len(messages) == 2
