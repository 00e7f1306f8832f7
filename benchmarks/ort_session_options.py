"""ONNX Runtime session options that trade speed for memory, on a bundle's towers: peak memory of each in a
fresh process, and tower latency of all of them interleaved in one process (ratio to vledge's sessions).

Sessions are opened as vledge opens them (from the bytes, 2 threads, no spinning, the bytes let go after);
each option is added on top: no CPU memory arena, no memory patterns, no pre-packed weights, initializers
outside the arena.

    python benchmarks/ort_session_options.py BUNDLE [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

THREADS = 2
TOKENS = 77
OPTIONS = {
    "vledge": {},
    "no arena": {"enable_cpu_mem_arena": False},
    "no memory patterns": {"enable_mem_pattern": False},
    "no pre-packing": {"session.disable_prepacking": "1"},
    "initializers outside the arena": {"session.use_device_allocator_for_initializers": "1"},
}


def session(path: Path, option: dict):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in option.items():
        if key.startswith("session."):
            opts.add_session_config_entry(key, value)
        else:
            setattr(opts, key, value)
    made = ort.InferenceSession(path.read_bytes(), sess_options=opts, providers=["CPUExecutionProvider"])
    made._model_bytes = None  # as vledge does (runtimes/onnxruntime_backend.py)
    return made


def feeds(batch: int) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, (batch, TOKENS), dtype=np.int64)
    ids[:, -1] = 2
    return {"image": {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)},
            "text": {"input_ids": ids, "attention_mask": np.ones_like(ids)}}


def calls() -> list[tuple[str, str, dict]]:
    one, eight = feeds(1), feeds(8)
    return [(f"{kind} b{n}", kind, batch[kind]) for kind in ("image", "text") for n, batch in ((1, one), (8, eight))]


def peak_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM"))


def memory_row(bundle: str, name: str) -> dict:
    """Peak memory of a process that opens both towers with ``name``'s option and runs each call once."""
    import onnxruntime  # noqa: F401  (its import is the baseline, as in benchmarks/camera_rows.py)

    start = peak_mb()
    sessions = {kind: session(Path(bundle) / f"{kind}_encoder.onnx", OPTIONS[name]) for kind in ("image", "text")}
    opened = peak_mb()
    for _, kind, feed in calls():
        sessions[kind].run(None, feed)
    return {"option": name, "baseline_mb": round(start, 1), "opened_peak_mb": round(opened, 1),
            "peak_mb": round(peak_mb(), 1)}


def latency(bundle: str, rounds: int) -> list[dict]:
    """Median ms of each call for every option, the options taking turns call by call."""
    sessions = {name: {kind: session(Path(bundle) / f"{kind}_encoder.onnx", option) for kind in ("image", "text")}
                for name, option in OPTIONS.items()}
    times = {(name, call): [] for name in OPTIONS for call, _, _ in calls()}
    for _ in range(rounds + 1):  # the first round warms up
        for call, kind, feed in calls():
            for name in OPTIONS:
                start = time.perf_counter()
                sessions[name][kind].run(None, feed)
                times[(name, call)].append((time.perf_counter() - start) * 1000)
    rows = []
    for name in OPTIONS:
        row = {"option": name}
        for call, _, _ in calls():
            ms = statistics.median(times[(name, call)][1:])
            base = statistics.median(times[("vledge", call)][1:])
            row[f"{call} ms"], row[f"{call} ratio"] = round(ms, 3), round(ms / base, 3)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--memory-row", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_row:
        print(json.dumps(memory_row(args.bundle, args.memory_row)))
        return 0
    memory = [json.loads(subprocess.run([sys.executable, __file__, args.bundle, "--memory-row", name], check=True,
                                        capture_output=True, text=True).stdout) for name in OPTIONS]
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(json.dumps({"bundle": args.bundle, "threads": THREADS, "rounds": args.rounds, "memory": memory,
                      "latency": latency(args.bundle, args.rounds), "loadavg_before": load}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
