"""Fault injection, load: one loaded bundle served by 8 threads x 500 classify calls, per runtime backend.

Each backend runs in its own process holding only what a device holds (vledge, numpy, the runtime; no
torch), so its resident memory is the server's alone. Twelve label lists rotate through the calls: more
than the 8 the label cache keeps, so text encoding and cache eviction run concurrently too.
"""

import json
import subprocess
import sys

import pytest

from bundles import build_bundle
from faults import CHILD_ENV

THREADS, CALLS = 8, 500

WORKER = r"""
import json, os, sys, threading
import numpy as np
import vledge

def rss() -> int:
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

bundle, threads, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = vledge.load(bundle, threads=1)
rng = np.random.default_rng(0)
images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(16)]
words = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
label_sets = [[words[(s + k) % 10] for k in range(2 + s % 3)] for s in range(12)]
cycle = 48  # every (image, label list) pair: lcm(16, 12)

def call(i):
    return model.classify(images[i % 16], label_sets[i % 12], top_k=3)

expected = [call(i) for i in range(cycle)]  # single-threaded
errors, mismatches = [], []

def serve(worker, n):
    try:
        for k in range(n):
            i = worker * 7 + k  # workers out of step with each other
            if call(i) != expected[i % cycle]:
                mismatches.append(i)
    except Exception as exc:
        errors.append(repr(exc))

def run(n):
    pool = [threading.Thread(target=serve, args=(w, n)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

run(50)  # warm-up: per-thread infer requests, allocator pools, the label cache
warm = rss()
run(calls)
print(json.dumps({"calls": threads * calls, "errors": errors[:3], "n_errors": len(errors),
                  "mismatches": len(mismatches), "rss_warm": warm, "rss_end": rss(),
                  "backend": model.info()["backend"], "torch_loaded": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_eight_threads_serve_one_model(backend, tmp_path):
    pytest.importorskip(backend)
    bundle = build_bundle(tmp_path / "bundle", openvino=backend == "openvino",
                          target="intel-cpu" if backend == "openvino" else "cpu")
    import os

    done = subprocess.run([sys.executable, "-c", WORKER, str(bundle), str(THREADS), str(CALLS)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **CHILD_ENV})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend and not result["torch_loaded"]
    assert result["n_errors"] == 0, result["errors"]
    assert result["mismatches"] == 0  # every call equals the single-threaded result exactly
    growth = result["rss_end"] / result["rss_warm"] - 1
    assert growth < 0.10, f"resident memory grew {growth:.1%} after warm-up ({result})"
