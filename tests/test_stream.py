"""vledge.stream on real videos made here with PyAV: events, regions, sampling, batching, damaged and
truncated files, a network stream that ends or stalls mid-frame, and a model slower than the source."""

import http.server
import json
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("av", reason="the video extra (PyAV) is not installed")

import vledge  # noqa: E402
from bundles import LABEL_NAMES, build_bundle  # noqa: E402
from videos import fashion_images, write_video  # noqa: E402
from vledge.errors import ConfigError, MissingDependencyError, StreamError  # noqa: E402
from vledge.events import EventConfig, EventRule  # noqa: E402

LABEL = "t-shirt"
HIGH, LOW = 188, 50  # Fashion-MNIST test images the tiny model scores high and low for LABEL
THRESHOLD = 0.3
BOUND = 30  # seconds: every stream here must end, one way or another, well before this


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return vledge.load(build_bundle(tmp_path_factory.mktemp("stream") / "bundle"))


@pytest.fixture(scope="module")
def tiles():
    high, low = fashion_images([HIGH, LOW])
    return high, low


def bounded(fn, timeout=BOUND):
    """Run fn in a thread; fail (instead of hanging the suite) if it has not returned within timeout."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: a hang"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_the_tiles_score_on_either_side_of_the_threshold(model, tiles):
    high, low = (dict(model.classify(t, top_k=9).top)[LABEL] for t in tiles)
    assert high > THRESHOLD + 0.1 and low < THRESHOLD - 0.1


def test_events_from_a_real_video_are_exactly_the_hysteresis_rule(model, tiles, tmp_path):
    high, low = tiles
    # 10 fps; segments in frames: low 5, high 2 (a blip), low 3, high 10, low 2, high 1, low 10
    segments = [(low, 5), (high, 2), (low, 3), (high, 10), (low, 2), (high, 1), (low, 10)]
    frames = [tile for tile, n in segments for _ in range(n)]
    path = write_video(tmp_path / "clip.mkv", frames, fps=10)
    rule = EventRule(LABEL, THRESHOLD, enter_after=0.4, leave_after=0.6)
    stream = vledge.stream(model, path, labels=LABEL_NAMES, events=EventConfig((rule,)), fps=5)
    results = bounded(lambda: list(stream))
    # sampled at 0.0, 0.2, ...: hits at 0.6 (alone), 1.0-1.8, 2.2; misses elsewhere
    events = [(e.kind, e.frame, e.time, e.since, e.reason) for r in results for e in r.events]
    assert events == [("enter", 14, pytest.approx(1.4), pytest.approx(1.0), None),
                      ("leave", 30, pytest.approx(3.0), pytest.approx(2.4), "below")]
    assert [r.index for r in results] == list(range(0, 33, 2))
    assert stream.stats.decoded == 33 and stream.stats.processed == 17 and stream.stats.dropped == 0
    enter = next(e for r in results for e in r.events)
    assert enter.label == LABEL and enter.score > THRESHOLD and enter.region is None
    assert json.loads(enter.to_json())["frame"] == 14


def test_zones_and_per_frame_boxes_are_classified_as_crops(model, tiles, tmp_path):
    high, low = tiles
    frames = [np.concatenate([high, low] if i < 5 else [low, high], axis=1) for i in range(10)]  # 56 x 28
    path = write_video(tmp_path / "two.mkv", frames, fps=10)
    boxes = tmp_path / "regions.jsonl"
    boxes.write_text('{"box": [0, 0, 28, 28], "id": "left"}\n{"box": [28, 0, 56, 28], "id": "right"}\n'
                     '{"frame": 7, "box": [28, 0, 56, 28], "id": "det"}\n')
    config = EventConfig((EventRule(LABEL, THRESHOLD),))
    results = bounded(lambda: list(vledge.stream(model, path, labels=LABEL_NAMES, events=config, regions=boxes)))
    events = [(e.kind, e.region, e.frame, e.reason) for r in results for e in r.events]
    assert events == [("enter", "left", 0, None), ("leave", "left", 5, "below"), ("enter", "right", 5, None),
                      ("enter", "det", 7, None), ("leave", "det", 8, "below"), ("leave", "right", 9, "end")]
    assert results[-1].final and results[-1].regions == []
    assert [len(r.regions) for r in results[:10]] == [2] * 7 + [3] + [2] * 2
    crop_scores = results[0].regions[0].scores[LABEL]
    assert crop_scores == pytest.approx(dict(model.classify(high, LABEL_NAMES, top_k=9).top)[LABEL], abs=1e-6)


def test_a_callable_gives_boxes_per_frame(model, tiles, tmp_path):
    high, low = tiles
    path = write_video(tmp_path / "c.mkv", [np.concatenate([low, high], axis=1)] * 4, fps=10)
    seen = []

    def detector(pixels, index, t):
        seen.append((pixels.shape, index))
        return [{"box": [28, 0, 56, 28], "id": "person-1"}, (-50, -50, -10, -10)]  # the second lies outside

    results = bounded(lambda: list(vledge.stream(model, path, labels=LABEL_NAMES, regions=detector)))
    assert seen == [((28, 56, 3), i) for i in range(4)]
    assert [[r.region for r in res.regions] for res in results] == [["person-1"]] * 4
    assert results[0].regions[0].top[0] == LABEL


def test_batches_give_the_results_of_single_frames(model, tiles, tmp_path):
    high, low = tiles
    path = write_video(tmp_path / "b.mkv", [high, low] * 5, fps=10)
    one = vledge.stream(model, path, labels=LABEL_NAMES, batch_size=1)
    four = vledge.stream(model, path, labels=LABEL_NAMES, batch_size=4)
    a, b = bounded(lambda: list(one)), bounded(lambda: list(four))
    assert (one.stats.batches, four.stats.batches) == (10, 3)
    for x, y in zip(a, b):
        assert x.index == y.index
        assert x.regions[0].scores == pytest.approx(y.regions[0].scores, abs=1e-6)
    auto = vledge.stream(model, path, labels=LABEL_NAMES)  # batch chosen by timing: either is right
    assert len(bounded(lambda: list(auto))) == 10


def test_a_model_slower_than_the_source_drops_frames_with_bounded_latency(model, tiles, tmp_path):
    high, low = tiles
    path = write_video(tmp_path / "live.mkv", [high, low] * 30, fps=20)  # 3 s of a 20 fps camera
    delay = 0.15

    class Slow:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def classify(self, *args, **kwargs):
            time.sleep(delay)
            return self.inner.classify(*args, **kwargs)

    stream = vledge.stream(Slow(model), path, labels=LABEL_NAMES, live=True, realtime=True)
    results = bounded(lambda: list(stream))
    stats = stream.stats.snapshot()
    assert stats["decoded"] == 60
    assert stats["processed"] == len(results) <= 3 / delay + 2
    assert stats["dropped"] >= 30 and stats["processed"] + stats["dropped"] <= 60
    # a frame waits at most one inference in the slot, then takes one: 2 x 150 ms, plus scheduling slack
    assert max(r.latency for r in results) < 2 * delay + 0.2
    assert [r.index for r in results] == sorted(r.index for r in results)


def test_a_truncated_matroska_file_ends_cleanly_with_the_frames_it_has(model, tiles, tmp_path, caplog):
    high, low = tiles
    path = write_video(tmp_path / "full.mkv", [high, low] * 20, fps=10)
    cut = tmp_path / "cut.mkv"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    results = bounded(lambda: list(vledge.stream(model, cut, labels=LABEL_NAMES)))
    assert 5 < len(results) < 40
    assert [r.index for r in results] == list(range(len(results)))
    assert any("truncated or damaged" in r.getMessage() for r in caplog.records)


def test_a_truncated_mp4_is_a_named_error(model, tiles, tmp_path):
    high, low = tiles
    path = write_video(tmp_path / "full.mp4", [high, low] * 20, fps=10, codec="libx264")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # its index (moov) is at the end: gone
    with pytest.raises(StreamError, match="cut.mp4"):
        bounded(lambda: list(vledge.stream(model, cut, labels=LABEL_NAMES)))


def test_damaged_files_give_a_named_error_or_a_clean_end(model, tiles, tmp_path, caplog):
    high, low = tiles
    garbage = tmp_path / "noise.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(StreamError, match="cannot open video source"):
        bounded(lambda: list(vledge.stream(model, garbage, labels=LABEL_NAMES)))
    with pytest.raises(StreamError, match="not found"):
        bounded(lambda: list(vledge.stream(model, tmp_path / "absent.mkv", labels=LABEL_NAMES)))
    path = write_video(tmp_path / "ok.mkv", [high, low] * 20, fps=10, codec="mpeg4")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    hurt = tmp_path / "hurt.mkv"
    hurt.write_bytes(bytes(data))
    results = bounded(lambda: list(vledge.stream(model, hurt, labels=LABEL_NAMES)))  # a clean end, and a warning
    assert 0 < len(results) < 40
    assert any("truncated or damaged" in r.getMessage() for r in caplog.records)


class _PartialServer:
    """An HTTP server on 127.0.0.1 sending part of a video, then closing (or, with stall, holding) the connection."""

    def __init__(self, payload: bytes, stall: bool):
        done = self.done = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", str(len(payload) * 2))  # promises more than it sends
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                if stall:
                    done.wait(BOUND)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cam.ts"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self):
        self.done.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("stall", [False, True], ids=["closes", "stalls"])
def test_a_network_stream_that_ends_mid_frame_is_a_named_error_in_bounded_time(model, tiles, tmp_path, stall):
    high, low = tiles
    ts = write_video(tmp_path / "cam.ts", [high, low] * 40, fps=10, codec="libx264")
    data = ts.read_bytes()
    server = _PartialServer(data[: len(data) // 2 + 101], stall)  # + 101: not on a 188-byte packet boundary
    try:
        start = time.perf_counter()
        stream = vledge.stream(model, server.url, labels=LABEL_NAMES, timeout=1.0)
        got = []
        with pytest.raises(StreamError, match="127.0.0.1"):
            bounded(lambda: got.extend(stream))
        assert time.perf_counter() - start < 15
        assert got, "the frames before the cut are classified"
    finally:
        server.close()


def test_breaking_off_stops_the_decoder(model, tiles, tmp_path):
    high, low = tiles
    path = write_video(tmp_path / "long.mkv", [high, low] * 50, fps=10)
    stream = vledge.stream(model, path, labels=LABEL_NAMES, batch_size=1)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream._thread.join(5)
    assert not stream._thread.is_alive()
    assert stream.stats.processed == 3


def test_without_pyav_the_error_names_the_extra(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    path = tmp_path / "x.mkv"
    path.write_bytes(b"0")
    with pytest.raises(MissingDependencyError, match=r'vledge\[video\]'):
        bounded(lambda: list(vledge.stream(model, path, labels=LABEL_NAMES)))


def test_one_label_alone_is_refused(model):
    with pytest.raises(ConfigError, match="add negatives"):
        vledge.stream(model, "x.mkv", events=EventConfig.simple([LABEL]))


def test_vledge_watch_writes_the_events_as_json_lines(model, tiles, tmp_path, capsys):
    from vledge.cli import main

    high, low = tiles
    frames = [tile for tile, n in [(low, 5), (high, 2), (low, 3), (high, 10), (low, 2), (high, 1), (low, 10)]
              for _ in range(n)]
    path = write_video(tmp_path / "clip.mkv", frames, fps=10)
    out = tmp_path / "events.jsonl"
    negatives = ",".join(n for n in LABEL_NAMES if n != LABEL)
    code = bounded(lambda: main(["watch", model.info()["path"], str(path), "--labels", LABEL, "--negatives", negatives,
                                 "--threshold", str(THRESHOLD), "--enter-after", "0.4", "--leave-after", "0.6",
                                 "--fps", "5", "--out", str(out)]))
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["kind"], e["frame"], e["label"]) for e in lines] == [("enter", 14, LABEL), ("leave", 30, LABEL)]
    assert set(lines[0]) >= {"kind", "label", "time", "frame", "score", "since", "region", "box", "wall"}
    assert bounded(lambda: main(["watch", model.info()["path"], str(tmp_path / "nothing.mkv"), "--labels", "a,b"])) == 2
    assert "not found" in capsys.readouterr().err
