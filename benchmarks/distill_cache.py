"""One distillation epoch of the demo teacher's default student with a warm teacher-output cache, against the
same epoch running the teacher, in one run. Knobs at the top; run from the repository root:
    .venv/bin/python benchmarks/distill_cache.py
Writes benchmarks/results/distill_cache.json. The machine's load average is recorded beside the figures:
on a shared machine, read the ratio rather than the seconds.
"""

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vledge.compress.distill import DistillConfig, distill, split_indices
from vledge.compress.students import build_student, default_student
from vledge.compress.teacher_cache import TeacherCache
from vledge.data import load_dataset
from vledge.models import load_teacher

TEACHER = "runs/teacher"
DATA = "fashion-mnist"
MAX_SAMPLES = 30000  # DistillConfig's default: the images of one epoch
BATCH_SIZE = 256
THREADS = 1  # on a shared 2-core machine two OpenMP threads spin against other work; one measures compute
SEED = 0
OUT = Path("benchmarks/results/distill_cache.json")


def one_epoch(teacher, data, config, teacher_forward=None) -> dict:
    student = build_student(default_student(teacher), teacher, seed=SEED)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    report = distill(student, teacher, data, config, teacher_forward=teacher_forward)
    epoch = report.history[0]
    seen = report.train_images
    return {
        "distill_seconds": round(time.perf_counter() - started, 2),  # held-out teacher pass, scoring, the epoch
        "epoch_seconds": round(epoch["seconds"], 2),  # training steps and the held-out scoring after them
        "train_seconds": round(seen / epoch["images_per_second"], 2),  # training steps only
        "images_per_second": round(epoch["images_per_second"], 1),
        "val_loss": epoch["val_loss"], "val_agreement": epoch["val_agreement"], "load_average_1min_before": load,
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.manual_seed(SEED)
    teacher = load_teacher(TEACHER)
    data = load_dataset(DATA, "train")
    config = DistillConfig(epochs=1, batch_size=BATCH_SIZE, patience=None, max_samples=MAX_SAMPLES, num_threads=THREADS,
                           seed=SEED)
    with tempfile.TemporaryDirectory() as cache_dir:
        torch.set_num_threads(THREADS)
        student = build_student(default_student(teacher), teacher, seed=SEED)
        load, started = os.getloadavg()[0], time.perf_counter()
        cold = TeacherCache(cache_dir, teacher, data, spec=student.preprocess, batch_size=BATCH_SIZE)
        built = cold.build(np.concatenate(split_indices(len(data), config)))
        build = {"seconds": round(time.perf_counter() - started, 2), "load_average_1min_before": load, **built.to_dict()}
        without = one_epoch(teacher, data, config)
        warm = TeacherCache(cache_dir, teacher, data, spec=student.preprocess, batch_size=BATCH_SIZE)  # read from disk
        cached = one_epoch(teacher, data, config, warm)
        cached["cache"] = warm.stats.to_dict()
        cache_bytes = sum(p.stat().st_size for p in Path(cache_dir).rglob("*") if p.is_file())
    results = {
        "what": "one distillation epoch of the default student from the demo teacher, teacher forward vs warm cache",
        "teacher": TEACHER, "student": default_student(teacher), "data": DATA, "images": MAX_SAMPLES,
        "batch_size": BATCH_SIZE, "threads": THREADS, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
        "build_cache": build, "cache_bytes": cache_bytes, "without_cache": without, "with_warm_cache": cached,
        "speedup_epoch": round(without["epoch_seconds"] / cached["epoch_seconds"], 2),
        "speedup_train_steps": round(without["train_seconds"] / cached["train_seconds"], 2),
        "speedup_distill_call": round(without["distill_seconds"] / cached["distill_seconds"], 2),
        "val_loss_difference": abs(without["val_loss"] - cached["val_loss"]),
        "load_average_after": os.getloadavg(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("speedup_epoch", "speedup_train_steps", "speedup_distill_call",
                                              "val_loss_difference", "load_average_after")}, indent=2))
