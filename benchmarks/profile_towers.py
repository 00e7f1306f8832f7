"""Where a tower's time goes: per-operator time from the runtime's own profiler, for bundles side by side.

ONNX Runtime: SessionOptions.enable_profiling (a JSON trace; node events summed per op type).
OpenVINO: PERF_COUNT (per-layer real time, grouped by layer type and the kernel it ran, e.g. brgconv_avx512_amx_I8).
Knobs at the top. Run from the repository root:
    .venv/bin/python benchmarks/profile_towers.py
"""

import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


from vledge.bundle import safe_join
from vledge.bundle_files import read_manifest
from vledge.data import load_dataset
from vledge.images import preprocess
from vledge.text import TextTokenizer

BUNDLES = sys.argv[1:] or ["runs/bench-work/bundles/student-onnx-fp32", "runs/bench-work/bundles/student-cpu-int8",
                           "runs/bench-work/bundles/student-openvino-fp32", "runs/bench-work/bundles/student-intel-cpu-int8"]
BATCH = int(os.environ.get("BATCH", 8))
RUNS = int(os.environ.get("RUNS", 200))
THREADS = 2
TOP = 8  # op types shown per tower


def feeds(root: Path, manifest, kind: str) -> dict:
    data = load_dataset("fashion-mnist", "test")
    spec = manifest.towers[kind]
    if kind == "image":
        arrays = [preprocess([data.image(i) for i in range(BATCH)], manifest.preprocess)]
    else:
        tokenizer = TextTokenizer.from_file(safe_join(root, manifest.tokenizer.file), manifest.tokenizer)
        arrays = list(tokenizer([data.caption(i) for i in range(BATCH)]))
    return {t.name: a.astype(t.dtype) for t, a in zip(spec.inputs, arrays)}


def ort_profile(path: Path, feed: dict) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(RUNS):  # the trace cannot leave out a warm-up; over many runs the first one hardly counts
        session.run(None, feed)
    trace = json.loads(Path(session.end_profiling()).read_text())
    per_op = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e3 / RUNS  # us -> ms per run
    return per_op


def ov_profile(path: Path, feed: dict, exact: bool) -> dict[str, float]:
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": THREADS, "PERF_COUNT": True}
    if exact:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    per_op = defaultdict(float)
    for i in range(10 + RUNS):
        request.infer(feed)
        if i >= 10:
            for info in request.profiling_info:
                per_op[f"{info.node_type} [{info.exec_type}]"] += info.real_time.total_seconds() * 1e3 / RUNS
    return per_op


if __name__ == "__main__":
    for bundle in BUNDLES:
        root = Path(bundle)
        manifest = read_manifest(root)
        for kind in ("image", "text"):
            tower = manifest.towers[kind]
            path = safe_join(root, tower.file)
            feed = feeds(root, manifest, kind)
            per_op = (ov_profile(path, feed, exact=tower.precision == "fp32") if tower.format == "openvino"
                      else ort_profile(path, feed))
            total = sum(per_op.values())
            top = sorted(per_op.items(), key=lambda kv: -kv[1])[:TOP]
            print(f"{root.name} {kind} ({tower.precision}, batch {BATCH}): {total:.3f} ms in operators per run")
            for op, ms in top:
                print(f"    {ms:7.3f} ms {ms / total * 100:5.1f}%  {op}")
