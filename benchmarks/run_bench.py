"""The reference benchmark: the demo teacher, its student's FP32/INT8 variants and the demo cpu bundle,
then the project's goals checked as ratios of rows measured in the same run.

Knobs at the top; the same as `vledge bench` (see `vledge bench --help`). Run from the repository root:
    .venv/bin/python benchmarks/run_bench.py            # measure, then check the goals
    .venv/bin/python benchmarks/run_bench.py --check    # only check the goals on OUT/results.json
Take the numbers on a quiet machine (check `uptime`): the goals are ratios of rows measured one
after the other, and a busy host makes the PyTorch rows look slower than they are.
"""

import json
import logging
import sys
from pathlib import Path

from vledge.bench import BenchConfig, bench
from vledge.bench.measure import Repetitions
from vledge.bench.report import markdown_table
from vledge.bench.rows import STUDENT_FP32_ORT, STUDENT_FP32_OV, STUDENT_INT8_ORT, STUDENT_INT8_OV, TEACHER_TORCH

TEACHER = "runs/teacher"  # made by scripts/demo.sh
BUNDLES = ["runs/bundle-cpu"]  # measured as vledge compress shipped them
STUDENT = None  # None: distil one with compress's own stage (kept in WORK_DIR for later runs)
DATA, SPLIT, MAX_SAMPLES = "fashion-mnist", "test", None  # None: all 10,000 test images
OUT = "benchmarks/results"
WORK_DIR = "runs/bench-work"  # exported variants, the student, logs: big, not committed
THREADS = 2
REPS = Repetitions(warmup=5, min_rounds=30, min_seconds=1.0, max_rounds=5000, max_seconds=6.0)
REPEATS = 5  # fresh processes each row is timed in (median); one process alone varied by up to 50% here
SCALING = True
RESUME = True  # keep rows a previous (interrupted) run finished
REQUIRE = None  # budgets every bundle row must meet, as `vledge bench --require` takes them

# The goals: (what, limit); ratios are "at least", the others say which way.
IMAGE_SPEEDUP = 15.0  # INT8 image tower vs the teacher's PyTorch image tower, batch 1
TEXT_SPEEDUP = 10.0
INT8_THROUGHPUT_GAIN = 2.0  # INT8 vs FP32 of the same student, batch 8, per tower and runtime
TOP1_KEPT = 0.97  # share of the teacher's zero-shot top-1
INT8_DROP_PT = 0.5  # points of top-1 INT8 may lose against the FP32 student
SIZE_RATIO = 20.0  # teacher checkpoint bytes / bundle bytes
MEMORY_FACTOR, MEMORY_SLACK_MB = 3.0, 16.0  # peak memory <= factor x bundle + backend baseline + slack
PYTHON_US = 40.0  # time a batch-1 classify spends outside the tower
FRAME_FACTOR = 1.25  # one full-HD frame end to end vs the image tower at batch 1 (ONNX Runtime)
PEER_SPEEDUP, PEER_TOP1_PT = 3.0, -1.0  # vs the best peer: this much faster at no more than 1 point lower top-1
PAIRS = ((STUDENT_INT8_ORT, STUDENT_FP32_ORT, "ONNX Runtime"), (STUDENT_INT8_OV, STUDENT_FP32_OV, "OpenVINO"))


def _value(rows: dict, name: str, key: str):
    row = rows.get(name)
    return row.get(key) if row and row.get("status") == "ok" else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def goal(what: str, value, limit: float, higher_is_better: bool = True) -> str:
    """One goal as a line: PASS / MISS with the value against its limit, or n/a when not measured."""
    if value is None:
        return f"[n/a ] {what}: not measured (a row failed or was not run)"
    ok = value >= limit if higher_is_better else value <= limit
    return f"[{'PASS' if ok else 'MISS'}] {what}: {value:.3g} {'>=' if higher_is_better else '<='} {limit:.3g}"


def int8_rows(rows: dict) -> list[str]:
    """The INT8 student rows and every INT8 bundle, in table order."""
    return [n for n, r in rows.items() if n in (STUDENT_INT8_ORT, STUDENT_INT8_OV)
            or (r.get("role") == "bundle" and "int8" in str(r.get("precision", "")))]


def _per_int8_row(rows: dict, name: str, baselines: dict) -> list[str]:
    get = lambda key: _value(rows, name, key)  # noqa: E731
    teacher = lambda key: _value(rows, TEACHER_TORCH, key)  # noqa: E731
    backend = str(get("placement") or "").split(":")[0]
    size, base = get("size_mb"), baselines.get(backend)
    memory_limit = MEMORY_FACTOR * size + base + MEMORY_SLACK_MB if size is not None and base is not None else None
    lines = [
        goal(f"{name}: image b1 speed-up over the teacher in PyTorch",
             _ratio(teacher("image_b1_p50_ms"), get("image_b1_p50_ms")), IMAGE_SPEEDUP),
        goal(f"{name}: text b1 speed-up over the teacher in PyTorch",
             _ratio(teacher("text_b1_p50_ms"), get("text_b1_p50_ms")), TEXT_SPEEDUP),
        goal(f"{name}: top-1 kept of the teacher's", get("top1_kept"), TOP1_KEPT),
        goal(f"{name}: teacher checkpoint size / bundle size", get("size_ratio"), SIZE_RATIO),
        goal(f"{name}: peak MB vs {MEMORY_FACTOR:g} x bundle + {backend or 'backend'} baseline + {MEMORY_SLACK_MB:g}",
             get("peak_rss_mb") if memory_limit is not None else None, memory_limit or 0.0, higher_is_better=False),
        goal(f"{name}: Python-side us of a batch-1 classify", get("python_us"), PYTHON_US, higher_is_better=False),
    ]
    if backend == "onnxruntime":
        lines.append(goal(f"{name}: 1080p frame end to end / image tower b1",
                          _ratio(get("frame_b1_p50_ms"), get("image_b1_p50_ms")), FRAME_FACTOR, higher_is_better=False))
    if any(r.get("role") == "peer" for r in rows.values()):
        for cell in ("image_b1", "image_b8", "text_b1"):
            lines.append(goal(f"{name}: {cell} speed-up over the best peer", get(f"vs_peer_{cell}"), PEER_SPEEDUP))
        lines.append(goal(f"{name}: top-1 points against the best peer", get("vs_peer_top1_pt"), PEER_TOP1_PT))
    return lines


def check_goals(results: dict) -> list[str]:
    """Every goal over one run's rows, as lines."""
    rows = {r["name"]: r for r in results["rows"]}
    lines = []
    for int8, fp32, runtime in PAIRS:
        if int8 not in rows and fp32 not in rows:
            continue
        for kind, key in (("image", "images_per_s"), ("text", "texts_per_s")):
            lines.append(goal(f"{int8}: {kind} b8 throughput INT8 / FP32 on {runtime}",
                              _ratio(_value(rows, int8, key), _value(rows, fp32, key)), INT8_THROUGHPUT_GAIN))
        a, b = _value(rows, fp32, "top1"), _value(rows, int8, "top1")
        lines.append(goal(f"{int8}: top-1 points lost against the FP32 student on {runtime}",
                          None if a is None or b is None else (a - b) * 100, INT8_DROP_PT, higher_is_better=False))
    for name in int8_rows(rows):
        lines += _per_int8_row(rows, name, results.get("baselines", {}))
    return lines


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if "--check" in sys.argv[1:]:
        results = json.loads((Path(OUT) / "results.json").read_text())
    else:
        results = bench(BenchConfig(teacher=TEACHER, bundles=BUNDLES, student=STUDENT, data=DATA, split=SPLIT,
                                    max_samples=MAX_SAMPLES, out=OUT, work_dir=WORK_DIR, threads=THREADS, reps=REPS,
                                    repeats=REPEATS, scaling=SCALING, resume=RESUME, require=REQUIRE))
    print(markdown_table(results["rows"]))
    print("\n".join(b["line"] for b in results.get("budgets", [])))
    goals = check_goals(results)
    print("\n".join(goals))
    (Path(OUT) / "goals.txt").write_text("\n".join(goals) + "\n")
