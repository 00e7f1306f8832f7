"""The benchmark's child processes: run one, time a row again while other processes load the CPU,
time it in several fresh processes, measure a backend's memory baseline.

Every measurement runs in a process of its own (``python -m vledge.bench.worker``): memory peaks never
mix, and a runtime that crashes loses one row, not the run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from vledge.bench.measure import combine_processes

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "openvino", "torch")
BUSY_CORES = 0.25  # CPU cores other processes may use while a row is timed before it is timed again


def slug(name: str) -> str:
    """A row name as a file-name stem ("student INT8 (ORT)" -> "student-int8-ort")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_worker(args: list[str], log_path: Path, result_path: Path, timeout: float) -> tuple[dict | None, str | None]:
    """Run ``python -m vledge.bench.worker *args``; its result, or why there is none (with the end of its log)."""
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "w") as logfile:
        try:
            done = subprocess.run([sys.executable, "-m", "vledge.bench.worker", *args], stdout=logfile,
                                  stderr=subprocess.STDOUT, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:.0f} s (log: {log_path})"
    if done.returncode == 0 and result_path.is_file():
        return json.loads(result_path.read_text()), None
    tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
    return None, f"exit {done.returncode}: {tail[0][:300] if tail else 'no output'} (log: {log_path})"


def timed_quietly(name: str, args: list[str], log_path: Path, result_path: Path, notes: list[str], *,
                  retries: int, timeout: float) -> tuple[dict | None, str | None]:
    """Run a row's worker; while other processes used more than ``BUSY_CORES`` of the CPU during its
    latency measurement, run it again (``retries`` times at most) and keep the attempt with the
    least such load. The choice is made on the load, never on the latencies."""
    attempts = []
    for _ in range(retries + 1):
        result, error = run_worker(args, log_path, result_path, timeout)
        if error:
            return (None, error) if not attempts else min(attempts, key=_load_of)
        attempts.append((result, None))
        if _load_of(attempts[-1]) <= BUSY_CORES:
            break
        log.info("bench: %s: other processes used %.2f CPU cores while it was timed; measuring again", name,
                 _load_of(attempts[-1]))
    best = min(attempts, key=_load_of)
    loads = ", ".join(f"{_load_of(a):.2f}" for a in attempts)
    if len(attempts) > 1:
        notes.append(f"timed {len(attempts)} times (CPU cores used by other processes: {loads}); kept the quietest")
    if _load_of(best) > BUSY_CORES:
        notes.append(f"other processes used {_load_of(best):.2f} CPU cores while this row was timed: "
                     "its latencies read slow; rerun on a quiet machine")
    return best


def _load_of(attempt) -> float:
    background = attempt[0].get("background_cores")
    return 0.0 if background is None else background


def timing_job(name: str, job: dict, work: Path) -> Path:
    """Write the job of a row's timing-only repeats (accuracy is not measured again); its path."""
    job_path = work / f"job-{slug(name)}-timing.json"
    job_path.write_text(json.dumps({**job, "timing_only": True, "save_reference": False}, indent=2))
    return job_path


def time_again(name: str, job_path: Path, work: Path, notes: list[str], *, retries: int, timeout: float) -> dict | None:
    """Time a row once more in a fresh process (``timing_job``); None, with a note, if that fails."""
    stem = job_path.stem.removeprefix("job-")
    result, error = timed_quietly(name, [str(job_path), str(work / f"result-{stem}.json")],
                                  work / "logs" / f"{stem}.log", work / f"result-{stem}.json", notes,
                                  retries=retries, timeout=timeout)
    if error:
        notes.append(f"a timing repeat failed: {error}")
        return None
    return result


def combined(results: list[dict]) -> tuple[dict, str]:
    """One row timed in several processes (the first measured accuracy too): the median of every latency and
    overhead figure across them, and a note on how many there were and how far their p50s spread."""
    latency, overhead, spread = combine_processes(results)
    worst = max(spread.values(), default=0.0)
    note = f"latencies: median of {len(results)} processes; p50 spread between processes up to {worst:.0%}"
    return {**results[0], "latency": latency, "overhead": overhead, "processes": len(results), "p50_spread": spread,
            "background_cores": max(_load_of((r, None)) for r in results)}, note


def memory_baseline(backend: str, work: Path, probe: Path) -> float | None:
    """A backend's own memory baseline in MB (see ``worker.measure_baseline``), or None if it failed."""
    result_path = work / f"baseline-{backend}.json"
    args = ["--baseline", backend, str(result_path), str(probe)]
    if backend == "onnxruntime":
        args.append(str(_empty_onnx(work / "empty.onnx")))
    result, error = run_worker(args, work / "logs" / f"baseline-{backend}.log", result_path, 300)
    if not result:
        log.warning("bench: no %s memory baseline: %s", backend, error)
        return None
    return result["baseline_mb"]


def _empty_onnx(path: Path) -> Path:
    """A one-node (Identity) ONNX graph: the session an ONNX Runtime baseline opens."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty", [x], [y])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path
