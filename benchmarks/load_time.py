"""How long ``vledge.load`` takes on the tests' demo-size bundle (tests/bundles.py's ``build_bundle``):
the median of ROUNDS loads in one process, after one warm-up load, for an ONNX and an OpenVINO bundle.

Run from the repository root (building the bundle needs the compress extra):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/load_time.py
Prints one JSON line per bundle.
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import vledge  # noqa: E402
from bundles import build_bundle  # noqa: E402

ROUNDS = 20
THREADS = 1

with tempfile.TemporaryDirectory() as tmp:
    bundles = {"onnx": build_bundle(Path(tmp) / "onnx"),
               "openvino": build_bundle(Path(tmp) / "ov", openvino=True, target="intel-cpu")}
    for name, bundle in bundles.items():
        vledge.load(bundle, threads=THREADS)
        times = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            vledge.load(bundle, threads=THREADS)
            times.append(time.perf_counter() - start)
        size = sum(p.stat().st_size for p in bundle.iterdir())
        print(json.dumps({"bundle": name, "bytes": size, "rounds": ROUNDS, "median_ms": round(statistics.median(times) * 1e3, 2),
                          "min_ms": round(min(times) * 1e3, 2), "max_ms": round(max(times) * 1e3, 2)}))
