"""The reference benchmark: the demo teacher, its student's FP32/INT8 variants and the demo cpu bundle.

Knobs at the top; the same as `vledge bench` (see `vledge bench --help`). Run from the repository root:
    .venv/bin/python benchmarks/run_bench.py
Take the numbers on a quiet machine (check `uptime`): the targets are ratios of rows measured one
after the other, and a busy host makes the PyTorch rows look slower than they are.
"""

import logging

from vledge.bench import BenchConfig, bench
from vledge.bench.measure import Repetitions
from vledge.bench.report import markdown_table

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

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    results = bench(BenchConfig(teacher=TEACHER, bundles=BUNDLES, student=STUDENT, data=DATA, split=SPLIT,
                                max_samples=MAX_SAMPLES, out=OUT, work_dir=WORK_DIR, threads=THREADS, reps=REPS,
                                repeats=REPEATS, scaling=SCALING, resume=RESUME))
    print(markdown_table(results["rows"]))
    print("\n".join(t["line"] for t in results["targets"]))
