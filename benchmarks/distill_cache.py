"""A distillation epoch with a warm teacher-output cache against the same epoch running the teacher.

One epoch of each kind per round, alternated, in one run. Run from the repository root; the defaults are the
demo teacher's:
    .venv/bin/python benchmarks/distill_cache.py [--teacher DIR] [--student NAME] [--data NAME] [--images N]
        [--batch-size N] [--rounds N] [--out FILE]
Writes benchmarks/results/distill_cache.json by default. The machine's load average is recorded beside the
figures: on a shared machine, read the ratio rather than the seconds, and the ratio of CPU seconds (this
process's, one thread) before the wall-clock one. Per step, the median milliseconds of the teacher's outputs
(the teacher forward or the cache read), of decoding the batch (in distill's prefetch thread, while the step
before runs), and of the rest of the step (the student's forward, backward, update); the same in CPU
milliseconds of each thread, which the load of a shared machine moves less (``speedup_step_cpu``: both threads'
CPU per step, without the cache against with it).
"""

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vledge.compress.distil import DistillConfig, TeacherCache, TeacherOutputs, distill, split_indices
from vledge.compress.students import build_student, default_student
from vledge.cpu import host_cpu
from vledge.data import load_dataset
from vledge.models import load_teacher

TEACHER = "runs/teacher"
DATA = "fashion-mnist"
MAX_SAMPLES = 30000  # DistillConfig's default: the images of one epoch
BATCH_SIZE = 256
THREADS = 1  # on a shared 2-core machine two OpenMP threads spin against other work; one measures compute
SEED = 0
ROUNDS = 3  # epochs of each kind, alternated; the ratio of their medians is reported (single rounds: 2.32-2.88x)
OUT = Path("benchmarks/results/distill_cache.json")


class Timed:
    """Wraps a callable and keeps the wall and CPU seconds of each call (of the full batches only, for the
    medians), and the calling thread's CPU clock at each start: distill calls the teacher's outputs once a
    training step, so from one start to the next is one step's CPU in the training thread."""

    def __init__(self, fn, full=lambda args: True):
        self.fn, self.full = fn, full
        self.seconds, self.cpu_seconds, self.cpu_starts = [], [], []
        if hasattr(fn, "encode_texts"):  # distill serves the class prompts through it: keep it visible
            self.encode_texts = fn.encode_texts

    def __call__(self, *args, **kwargs):
        started, cpu = time.perf_counter(), time.thread_time()
        out = self.fn(*args, **kwargs)
        if self.full(args):
            self.seconds.append(time.perf_counter() - started)
            self.cpu_seconds.append(time.thread_time() - cpu)
            self.cpu_starts.append(cpu)
        return out

    def median_ms(self) -> float:
        return _median_ms(self.seconds)

    def median_cpu_ms(self) -> float:
        return _median_ms(self.cpu_seconds)

    def median_cpu_ms_between_calls(self) -> float:
        return _median_ms([b - a for a, b in zip(self.cpu_starts, self.cpu_starts[1:])])


def _median_ms(seconds: list[float]) -> float:
    return round(1000 * statistics.median(seconds), 1) if seconds else 0.0


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def one_epoch(teacher, student_name, data, config, teacher_forward) -> dict:
    student = build_student(student_name, teacher, seed=SEED)
    size = config.batch_size
    full = lambda args: len(args[0]) == size  # noqa: E731  (first argument: a batch, or its indices)
    forward, decode = Timed(teacher_forward, lambda args: len(args[0].indices) == size), Timed(data.batch, full)
    data.batch = decode  # an instance attribute over the method, for this epoch only
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    try:
        report = distill(student, teacher, data, config, teacher_forward=forward)
    finally:
        del data.batch
    cpu = time.process_time() - cpu
    epoch, seen = report.history[0], report.train_images
    step_ms = 1000 * seen / epoch["images_per_second"] / max(1, epoch["steps"])
    step_cpu_ms = forward.median_cpu_ms_between_calls()
    return {
        "distill_seconds": round(time.perf_counter() - started, 2),  # held-out teacher pass, scoring, the epoch
        "distill_cpu_seconds": round(cpu, 2),
        "epoch_seconds": round(epoch["seconds"], 2),  # training steps and the held-out scoring after them
        "train_seconds": round(seen / epoch["images_per_second"], 2),  # training steps only
        "images_per_second": round(epoch["images_per_second"], 1),
        "per_step_ms": {
            "all": round(step_ms, 1), "teacher_outputs": forward.median_ms(), "data_batch": decode.median_ms(),
            "student_and_rest": round(step_ms - forward.median_ms(), 1),
        },
        "step_cpu_ms": round(step_cpu_ms + decode.median_cpu_ms(), 1),  # both threads
        # CPU milliseconds: the training thread's per step, and the prefetch thread's decoding beside it.
        "per_step_cpu_ms": {
            "training_thread": step_cpu_ms, "teacher_outputs": forward.median_cpu_ms(),
            "student_and_rest": round(step_cpu_ms - forward.median_cpu_ms(), 1), "data_batch": decode.median_cpu_ms(),
        },
        "val_loss": epoch["val_loss"], "val_agreement": epoch["val_agreement"], "load_average_1min_before": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default=TEACHER, help=f"a teacher folder load_teacher reads (default {TEACHER})")
    parser.add_argument("--student", help="a student architecture (default: the teacher's default student)")
    parser.add_argument("--data", default=DATA, help=f"data set name (default {DATA})")
    parser.add_argument("--images", type=int, default=MAX_SAMPLES, help=f"training images per epoch (default {MAX_SAMPLES})")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"default {BATCH_SIZE}")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"epochs of each kind, alternated (default {ROUNDS})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT})")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.manual_seed(SEED)
    teacher = load_teacher(args.teacher)
    student_name = args.student or default_student(teacher)
    data = load_dataset(args.data, "train")
    config = DistillConfig(epochs=1, batch_size=args.batch_size, patience=None, max_samples=args.images,
                           num_threads=THREADS, seed=SEED)
    with tempfile.TemporaryDirectory() as cache_dir:
        torch.set_num_threads(THREADS)
        student = build_student(student_name, teacher, seed=SEED)
        load, started = os.getloadavg()[0], time.perf_counter()
        cold = TeacherCache(cache_dir, teacher, data, spec=student.preprocess, batch_size=args.batch_size)
        built = cold.build(np.concatenate(split_indices(len(data), config)))
        build = {"seconds": round(time.perf_counter() - started, 2), "load_average_1min_before": load, **built.to_dict()}
        # What distill runs when given no teacher_forward, timed; alternated with warm-cache epochs.
        without, with_cache = [], []
        for _ in range(args.rounds):
            without.append(one_epoch(teacher, student_name, data, config, TeacherOutputs(teacher)))
            warm = TeacherCache(cache_dir, teacher, data, spec=student.preprocess, batch_size=args.batch_size)  # from disk
            with_cache.append({**one_epoch(teacher, student_name, data, config, warm), "cache": warm.stats.to_dict()})
        cache_bytes = sum(p.stat().st_size for p in Path(cache_dir).rglob("*") if p.is_file())
    results = {
        "what": f"one distillation epoch of {student_name} from {args.teacher}, teacher forward vs warm cache",
        "teacher": args.teacher, "student": student_name, "data": args.data, "images": args.images,
        "batch_size": args.batch_size, "threads": THREADS, "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "cpu": host_cpu().to_dict(),
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
        "build_cache": build, "cache_bytes": cache_bytes, "rounds": args.rounds,
        "without_cache": without, "with_warm_cache": with_cache,
        **{f"speedup_{key}": round(_median(without, f"{key}_seconds") / _median(with_cache, f"{key}_seconds"), 2)
           for key in ("epoch", "train", "distill")},
        "speedup_distill_cpu": round(_median(without, "distill_cpu_seconds") / _median(with_cache, "distill_cpu_seconds"), 2),
        "speedup_step_cpu": round(_median(without, "step_cpu_ms") / _median(with_cache, "step_cpu_ms"), 2),
        "speedup_epoch_per_round": [round(a["epoch_seconds"] / b["epoch_seconds"], 2) for a, b in zip(without, with_cache)],
        "val_loss_difference": max(abs(a["val_loss"] - b["val_loss"]) for a, b in zip(without, with_cache)),
        "load_average_after": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k.startswith("speedup") or k in ("val_loss_difference",
                                                                                           "load_average_after")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
