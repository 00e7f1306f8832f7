"""vledge bench: latency statistics, MAC counting, budgets and derived columns, a small run whose failing
rows are recorded (never raised) and whose report files parse, and the peer rows of a Hugging Face CLIP."""

import argparse
import csv
import json
import shutil

import numpy as np
import pytest

from bundles import build_bundle, tiny_model
from vledge.bench import BenchConfig, bench
from vledge.bench import processes
from vledge.bench.measure import (QUICK, Repetitions, combine_processes, count_macs, count_onnx_parameters,
                                  latency_stats, time_interleaved)
from vledge.bench.plots import plot_scaling
from vledge.bench.report import markdown_table
from vledge.bench.budgets import add_derived, check_budgets, parse_budgets
from vledge.bench.report import BUDGET_KEYS
from vledge.bench.rows import TEACHER_TORCH
from vledge.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_latency_stats_from_given_timings():
    stats = latency_stats([i / 1000 for i in range(1, 101)], batch=8)  # 1..100 ms
    assert stats["n"] == 100
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p95_ms"] == pytest.approx(95.05)
    assert stats["mean_ms"] == pytest.approx(50.5)
    assert stats["min_ms"] == pytest.approx(1.0)
    assert stats["items_per_s"] == pytest.approx(8 / 0.0505)
    with pytest.raises(ConfigError, match="non-empty list of non-negative timings"):
        latency_stats([])


def test_time_interleaved_runs_calls_round_robin_within_the_limits():
    order = []
    times = time_interleaved([lambda: order.append("a"), lambda: order.append("b")],
                             Repetitions(warmup=1, min_rounds=3, min_seconds=0.0, max_rounds=3, max_seconds=5.0))
    assert [len(t) for t in times] == [3, 3]
    assert order == ["a", "b"] + ["a", "b"] * 3  # warm-up, then alternating rounds
    with pytest.raises(ConfigError, match="min_rounds <= max_rounds"):
        Repetitions(min_rounds=5, max_rounds=2)


def test_mac_and_parameter_counts_on_a_known_graph(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal((256, 5)).astype(np.float32), "mm_w"),
        numpy_helper.from_array(rng.standard_normal((3, 5)).astype(np.float32), "gemm_w"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape"),  # not a parameter
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1]),  # (1,4,8,8): 256 outputs x 27
        helper.make_node("Reshape", ["c", "shape"], ["flat"]),  # (1, 256)
        helper.make_node("MatMul", ["flat", "mm_w"], ["m"]),  # (1, 5): 5 outputs x 256
        helper.make_node("Gemm", ["m", "gemm_w"], ["y"], transB=1),  # (1, 3): 3 outputs x 5
    ]
    graph = helper.make_graph(nodes, "known", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "known.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert count_macs(path, {"x": np.zeros((1, 3, 8, 8), np.float32)}) == 256 * 27 + 5 * 256 + 3 * 5
    assert count_macs(path, {"x": np.zeros((2, 3, 8, 8), np.float32)}) == 2 * (256 * 27 + 5 * 256 + 3 * 5)
    assert count_onnx_parameters(path) == 108 + 1280 + 15


def test_a_row_timed_in_several_processes_keeps_the_median_of_each_figure():
    def timed(p50, share):
        cell = {"p50_ms": p50, "p95_ms": 2 * p50, "mean_ms": p50, "min_ms": p50 / 2, "items_per_s": 1000 / p50, "n": 10}
        return {"latency": {"image_b1": cell, "text_b1": cell}, "overhead": {"classify_share": share}}

    latency, overhead, spread = combine_processes([timed(1.0, 0.5), timed(3.0, 0.1), timed(2.0, 0.3)])
    assert latency["image_b1"]["p50_ms"] == 2.0 and latency["image_b1"]["p95_ms"] == 4.0
    assert latency["image_b1"]["items_per_s"] == 500.0 and latency["image_b1"]["n"] == 30
    assert overhead == {"classify_share": 0.3}
    assert spread["text_b1"] == pytest.approx(1.0)  # (3 - 1) / 2


def _row(name, **values):
    return {"name": name, "status": "ok", **values}


def test_budgets_parse_with_clear_errors():
    budgets = parse_budgets(" image_b1_p50_ms<=5, top1_kept >= 0.97,,vs_peer_image_b1>3", BUDGET_KEYS)
    assert [str(b) for b in budgets] == ["image_b1_p50_ms<=5", "top1_kept>=0.97", "vs_peer_image_b1>3"]
    with pytest.raises(ConfigError, match=r"unknown key 'top1_keep'. Did you mean 'top1_kept'\? Keys: top1, "):
        parse_budgets("top1_keep>=0.97", BUDGET_KEYS)
    with pytest.raises(ConfigError, match="cannot read 'top1_kept=0.97': write KEY<=NUMBER"):
        parse_budgets("top1_kept=0.97", BUDGET_KEYS)
    with pytest.raises(ConfigError, match="'fast' is not a finite number"):
        parse_budgets("size_mb<=fast", BUDGET_KEYS)
    with pytest.raises(ConfigError, match="--require is empty"):
        parse_budgets(" , ", BUDGET_KEYS)


def test_derived_columns_and_budgets_on_given_rows():
    rows = [
        _row(TEACHER_TORCH, role="teacher", image_b1_p50_ms=100.0, top1=0.80, size_mb=60.0),
        _row("peer A", role="peer", image_b1_p50_ms=10.0, image_b8_p50_ms=50.0, text_b1_p50_ms=4.0, top1=0.79),
        _row("peer B", role="peer", image_b1_p50_ms=8.0, image_b8_p50_ms=60.0, top1=0.70),
        {"name": "peer C", "role": "peer", "status": "error (build): ImportError", "image_b1_p50_ms": 0.1},
        _row("bundle fast", role="bundle", image_b1_p50_ms=2.0, image_b8_p50_ms=10.0, text_b1_p50_ms=1.0, top1=0.78,
             size_mb=1.5, python_us=30.0),
        {"name": "bundle broken", "role": "bundle", "status": "error (run): exit 1: BundleError"},
    ]
    add_derived(rows, teacher_size_mb=60.0)
    fast = rows[4]
    assert fast["top1_kept"] == pytest.approx(0.975) and fast["size_ratio"] == pytest.approx(40.0)
    assert fast["vs_peer_image_b1"] == pytest.approx(4.0)  # peer B is the fastest at batch 1
    assert fast["vs_peer_image_b8"] == pytest.approx(5.0)  # peer A at batch 8; the failed peer C never counts
    assert fast["vs_peer_text_b1"] == pytest.approx(4.0) and fast["vs_peer_text_b8"] is None
    assert fast["vs_peer_top1_pt"] == pytest.approx(-1.0)  # against the best peer's top-1 (peer A)
    assert "top1_kept" not in rows[1]  # peers and teachers get no derived columns

    results = check_budgets(rows, parse_budgets("image_b1_p50_ms<=5,top1_kept>=0.98,vs_peer_image_b1>=3", BUDGET_KEYS))
    assert [(r.row, str(r.budget), r.status) for r in results] == [
        ("bundle fast", "image_b1_p50_ms<=5", "pass"), ("bundle fast", "top1_kept>=0.98", "miss"),
        ("bundle fast", "vs_peer_image_b1>=3", "pass"), ("bundle broken", "image_b1_p50_ms<=5", "miss"),
        ("bundle broken", "top1_kept>=0.98", "miss"), ("bundle broken", "vs_peer_image_b1>=3", "miss")]
    assert results[0].line() == "[PASS] bundle fast: image_b1_p50_ms 2 <= 5"
    assert results[1].line() == "[MISS] bundle fast: top1_kept 0.975 >= 0.98"
    assert results[3].line() == ("[MISS] bundle broken: image_b1_p50_ms <= 5: not measured "
                                 "(error (run): exit 1: BundleError)")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from vledge.models import save_dual_encoder

    root = tmp_path_factory.mktemp("bench")
    save_dual_encoder(tiny_model(), root / "teacher")
    build_bundle(root / "good")
    broken = build_bundle(root / "broken")
    (broken / "labels.json").write_text("[]")  # no longer matches its sha256
    return root


def _config(folders, out, **overrides):
    # retries=0: a row is timed once however busy the machine (retries have their own test)
    settings = dict(teacher=str(folders / "teacher"), rows=["teacher-onnx"], out=str(out), max_samples=32,
                    probe_images=8, reps=QUICK, scaling=False, retries=0, repeats=1)
    return BenchConfig(**{**settings, **overrides})


def test_failing_rows_are_recorded_and_reports_parse(folders, tmp_path):
    bundles = [str(folders / "good"), str(folders / "missing"), str(folders / "broken")]
    results = bench(_config(folders, tmp_path / "out", bundles=bundles, repeats=2, scaling=True, scaling_batches=(1, 2),
                            scaling_reps=QUICK))
    by_name = {r["name"]: r for r in results["rows"]}
    assert list(by_name) == ["teacher ONNX FP32 (ORT)", "bundle good", "bundle missing", "bundle broken"]
    good = by_name["bundle good"]
    assert good["status"] == "ok" and good["placement"] == "onnxruntime:cpu"
    assert 0 <= good["top1"] <= 1 and good["eval_n"] == 32
    assert good["image_b1_p50_ms"] > 0 and good["images_per_s"] > 0 and good["peak_rss_mb"] > 0
    assert good["image_mmacs"] > 0 and good["size_mb"] > 0
    assert good["frame_b1_p50_ms"] > 0 and good["python_us"] >= 0
    assert good["model"] is None  # its manifest records no model; the teacher's row names the architecture
    assert " + " in by_name["teacher ONNX FP32 (ORT)"]["model"]
    assert "bundle folder not found" in by_name["bundle missing"]["status"]
    assert "does not match its sha256" in by_name["bundle broken"]["status"]
    # The teacher's ONNX towers hold the same weights as the tiny model the good bundle was exported from.
    assert by_name["teacher ONNX FP32 (ORT)"]["top1"] == good["top1"]
    assert results["baselines"]["onnxruntime"] > 0
    notes = {d["name"]: d["notes"] for d in results["details"]}
    assert any(n.startswith("latencies: median of 2 processes") for n in notes["bundle good"])

    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in saved["rows"]] == list(by_name)
    assert saved["machine"]["versions"]["onnxruntime"] and saved["settings"]["threads"] == 2
    with open(out / "results.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["name"] for r in csv_rows] == list(by_name)
    assert float(csv_rows[1]["top1"]) == pytest.approx(good["top1"])
    report = (out / "report.md").read_text()
    assert "| variant | model | runs on | top-1 |" in report and "Budgets" not in report
    assert (out / "accuracy_latency.png").read_bytes()[:8] == PNG_MAGIC
    # The batch curves come from each row's first process, through the runtime like every other figure.
    curves = saved["scaling"]["batch"]
    assert sorted(curves) == ["bundle good", "teacher ONNX FP32 (ORT)"]
    assert sorted(curves["bundle good"]["image"]) == ["1", "2"] and curves["bundle good"]["text"]["2"] > 0
    assert (out / "scaling.png").read_bytes()[:8] == PNG_MAGIC


def test_a_build_failure_is_a_row_and_the_cli_prints_it(folders, tmp_path, capsys):
    from vledge.cli import bench_cmd

    (tmp_path / "not-a-checkpoint").mkdir()
    parser = argparse.ArgumentParser()
    bench_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--teacher", str(tmp_path / "not-a-checkpoint"), "--rows",
                              "teacher-onnx,peer-onnx-int8", "--out", str(tmp_path / "out"), "--no-scaling", "--quick",
                              "--max-samples", "16"])
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "error (build): CheckpointError" in printed
    assert "failed rows: teacher ONNX FP32 (ORT)" in printed
    assert f"skipped: peer rows: the teacher {tmp_path / 'not-a-checkpoint'} has no readable config.json" in printed
    with pytest.raises(ConfigError, match="unknown row 'student-int8'. Did you mean 'student-int8-ort'?"):
        bench(_config(folders, tmp_path / "out2", rows=["student-int8"]))


def test_require_checks_every_bundle_row_and_exits_1_on_a_miss(folders, tmp_path, capsys):
    from vledge.cli import bench_cmd

    parser = argparse.ArgumentParser()
    bench_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", str(folders / "good"), "--teacher", str(folders / "teacher"), "--rows", "none",
                              "--out", str(tmp_path / "out"), "--no-scaling", "--quick", "--max-samples", "16",
                              "--require", "top1>=0,size_mb<=0.000001"])
    assert args.handler(args) == 1
    printed = capsys.readouterr().out
    assert "[PASS] bundle good: top1 " in printed and ">= 0" in printed
    assert "[MISS] bundle good: size_mb " in printed and "1 of 2 budgets missed" in printed
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(b["row"], b["budget"], b["status"]) for b in saved["budgets"]] == [
        ("bundle good", "top1>=0", "pass"), ("bundle good", "size_mb<=1e-06", "miss")]
    assert "## Budgets (--require)" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(ConfigError, match="--require checks bundle rows, and no BUNDLE was given"):
        _config(folders, tmp_path / "out2", require="top1>=0.5")
    with pytest.raises(ConfigError, match="cannot read 'top1 0.5'"):
        _config(folders, tmp_path / "out2", bundles=[str(folders / "good")], require="top1 0.5")


def _two_bundles(folders, tmp_path) -> list[str]:
    """The good bundle and a copy of it: two rows that both measure."""
    shutil.copytree(folders / "good", tmp_path / "again")
    return [str(folders / "good"), str(tmp_path / "again")]


def test_an_interrupted_run_keeps_its_rows_and_resume_skips_them(folders, tmp_path, monkeypatch):
    bundles = _two_bundles(folders, tmp_path)
    real = processes.run_worker
    calls = []

    def interrupted_on_second_row(args, *rest, **kwargs):
        if "--baseline" not in args:
            calls.append(args)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(processes, "run_worker", interrupted_on_second_row)
    config = _config(folders, tmp_path / "out", rows=[], bundles=bundles)
    with pytest.raises(KeyboardInterrupt):
        bench(config)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["name"], r["status"]) for r in saved["rows"]] == [("bundle good", "ok")]

    monkeypatch.setattr(processes, "run_worker", real)
    resumed = bench(_config(folders, tmp_path / "out", rows=[], resume=True, bundles=bundles))
    assert [(r["name"], r["status"]) for r in resumed["rows"]] == [("bundle good", "ok"), ("bundle again", "ok")]
    assert resumed["rows"][0]["image_b1_p50_ms"] == saved["rows"][0]["image_b1_p50_ms"]  # kept, not measured again


def test_repeat_timings_go_round_the_rows_and_each_row_keeps_its_median(folders, tmp_path, monkeypatch):
    bundles = _two_bundles(folders, tmp_path)
    real = processes.run_worker
    timed = []

    def recording(args, *rest, **kwargs):
        if "--baseline" not in args:
            timed.append(json.loads(open(args[0]).read())["name"])
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(processes, "run_worker", recording)
    results = bench(_config(folders, tmp_path / "out", rows=[], repeats=3, bundles=bundles))
    assert timed == ["bundle good", "bundle again"] * 3  # rounds, not one row's repeats back to back
    assert [r["name"] for r in results["rows"]] == ["bundle good", "bundle again"]
    for detail in results["details"]:
        assert detail["result"]["processes"] == 3
        assert sum(n.startswith("latencies: median of 3 processes") for n in detail["notes"]) == 1


def test_a_failed_timing_repeat_keeps_the_row_and_says_so(folders, tmp_path, monkeypatch):
    real = processes.run_worker

    def repeats_crash(args, log_path, result_path, *rest, **kwargs):
        if args and args[0].endswith("-timing.json"):
            return None, "exit 1: boom"
        return real(args, log_path, result_path, *rest, **kwargs)

    monkeypatch.setattr(processes, "run_worker", repeats_crash)
    results = bench(_config(folders, tmp_path / "out", rows=[], repeats=3, bundles=[str(folders / "good")]))
    (row,) = results["rows"]
    assert row["status"] == "ok" and row["image_b1_p50_ms"] > 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["details"][0]
    assert saved["result"]["processes"] == 1  # one failed repeat ends the row's rounds
    assert any(n == "a timing repeat failed: exit 1: boom" for n in saved["notes"])


def test_plots_and_table_read_from_given_numbers(tmp_path):
    scaling = {"batch": {"student INT8 (ORT)": {"image": {"1": 0.5, "8": 2.0}, "text": {"1": 0.3, "8": 1.0}}},
               "resolution": {"student INT8 (ORT)": {"28": 0.5, "56": 1.5}}, "errors": []}
    assert plot_scaling(scaling, tmp_path / "s.png").read_bytes()[:8] == PNG_MAGIC
    assert plot_scaling({"batch": {}, "resolution": {}}, tmp_path / "none.png") is None
    table = markdown_table([{"name": "x", "status": "error (run): " + "y" * 200, "top1": 0.5}])
    assert "| x | - | - | 0.5000 |" in table and "..." in table and "y" * 100 not in table


def test_a_row_timed_under_load_is_timed_again_and_the_quietest_attempt_kept(monkeypatch, tmp_path):
    answers = iter([({"background_cores": 1.2, "n": 1}, None), ({"background_cores": 0.6, "n": 2}, None),
                    ({"background_cores": 0.9, "n": 3}, None), ({"background_cores": 0.1, "n": 4}, None)])
    monkeypatch.setattr(processes, "run_worker", lambda *args, **kwargs: next(answers))
    notes = []
    result, error = processes.timed_quietly("row", [], tmp_path / "log", tmp_path / "result", notes, retries=2,
                                            timeout=10.0)
    assert (result["n"], error) == (2, None)
    assert notes == ["timed 3 times (CPU cores used by other processes: 1.20, 0.60, 0.90); kept the quietest",
                     "other processes used 0.60 CPU cores while this row was timed: its latencies read slow; "
                     "rerun on a quiet machine"]
    notes = []
    assert processes.timed_quietly("row", [], tmp_path / "log", tmp_path / "result", notes, retries=2,
                                   timeout=10.0) == ({"background_cores": 0.1, "n": 4}, None)
    assert notes == []


def _clip_bundle(teacher_dir, work):
    """The tiny CLIP's own towers as an FP32 bundle, written with vledge.compress's public stage functions."""
    import math

    from vledge.compress import export_towers, fp32_tower, resolve_config, write_bundle
    from vledge.data import load_dataset
    from vledge.models import load_teacher

    teacher, config = load_teacher(teacher_dir), resolve_config("cpu")
    exported = export_towers(teacher, load_dataset("fashion-mnist", "test"), work / "towers", config.export_config())
    towers = {kind: fp32_tower(exported, kind, work / "towers")[0] for kind in ("image", "text")}
    return write_bundle(work / "clip-bundle", towers=towers, tokenizer=teacher.tokenizer, preprocess=teacher.preprocess,
                        target="cpu", precision="fp32", embed_dim=teacher.embed_dim,
                        logit_scale=math.exp(teacher.logit_scale.item()), config={}, metrics={}, provenance={})


@pytest.mark.slow  # about 100 s on 2 shared cores: four Optimum exports and quantizations, six worker processes
def test_peer_rows_of_a_hugging_face_clip_are_measured_beside_the_bundle(tmp_path):
    from tiny_clip import make_tiny_clip_folder
    from vledge.bench.peers import PEER_KEYS

    teacher = make_tiny_clip_folder(tmp_path / "clip")
    bundle = _clip_bundle(teacher, tmp_path)
    results = bench(BenchConfig(teacher=str(teacher), bundles=[str(bundle)], rows=["teacher-torch", *PEER_KEYS],
                                out=str(tmp_path / "out"), max_samples=32, probe_images=8, reps=QUICK, scaling=False,
                                retries=0, repeats=1, require="vs_peer_image_b1>0,top1_kept>=0.99"))
    rows = {r["name"]: r for r in results["rows"]}
    peers = [r for r in results["rows"] if r["role"] == "peer"]
    assert [r["status"] for r in peers] == ["ok"] * 4, [r["status"] for r in peers]
    assert [r["placement"] for r in peers] == ["onnxruntime:cpu"] * 2 + ["openvino:cpu"] * 2
    for row in peers:
        assert row["image_b1_p50_ms"] > 0 and row["image_b8_p50_ms"] > 0 and row["text_b1_p50_ms"] > 0
        assert row["size_mb"] > 0 and 0 <= row["top1"] <= 1 and "clip-vision" in row["model"]
    teacher_row, exported = rows[TEACHER_TORCH], rows["peer Optimum ONNX FP32 (ORT)"]
    # The FP32 export holds the teacher's weights: the same projected embeddings, the same top-1.
    assert exported["cos_image"] > 0.9999 and exported["cos_text"] > 0.9999
    assert exported["top1"] == teacher_row["top1"]
    assert rows["peer Optimum ORT dynamic INT8"]["cos_image"] > 0.99
    mine = rows["bundle clip-bundle"]
    assert mine["status"] == "ok" and mine["top1"] == teacher_row["top1"] and mine["top1_kept"] == 1.0
    best_top1 = max(r["top1"] for r in peers)
    assert mine["vs_peer_top1_pt"] == pytest.approx((mine["top1"] - best_top1) * 100)
    fastest = min(r["image_b1_p50_ms"] for r in peers)
    assert mine["vs_peer_image_b1"] == pytest.approx(fastest / mine["image_b1_p50_ms"])
    assert [b["status"] for b in results["budgets"]] == ["pass", "pass"]
    notes = {d["name"]: d["notes"] for d in results["details"]}
    assert any(n.startswith("made with ORTQuantizer, AutoQuantizationConfig.") for n in notes["peer Optimum ORT dynamic INT8"])
    assert "Best peer (the vs_peer columns compare with it): image_b1 peer" in (tmp_path / "out" / "report.md").read_text()
