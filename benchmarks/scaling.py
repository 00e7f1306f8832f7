"""Latency against batch size and image resolution, for any checkpoints and bundles, without the rest
of the benchmark. Each curve runs in its own process. Knobs at the top; run from the repository root:
    .venv/bin/python benchmarks/scaling.py
`vledge bench` draws the same curves for the teacher and the student (benchmarks/results/scaling.png).
"""

import logging
from pathlib import Path

from vledge.bench.plots import plot_scaling
from vledge.bench.processes import measure_scaling
from vledge.bench.runner import write_probe
from vledge.bench.scaling import SCALING_REPS
from vledge.data import load_dataset

CURVES = {  # name -> (kind, path): "torch" opens a checkpoint, "onnxruntime" / "openvino" a bundle
    "teacher PyTorch FP32": ("torch", "runs/teacher"),
    "cpu bundle INT8 (ORT)": ("onnxruntime", "runs/bundle-cpu"),
}
BATCHES = (1, 2, 4, 8, 16, 32)
RESOLUTIONS = (28, 56, 112, 224)
THREADS = 2
DATA = "fashion-mnist"
OUT = Path("runs/scaling")

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    OUT.mkdir(parents=True, exist_ok=True)
    data = load_dataset(DATA, "test")
    probe, texts, _ = write_probe(data, 32, OUT)
    curves = measure_scaling(CURVES, probe, texts, work=OUT, threads=THREADS, batches=BATCHES,
                             resolutions=RESOLUTIONS, reps=SCALING_REPS)
    for name, cells in curves["batch"].items():
        print(name, "image", cells["image"], "text", cells["text"], "resolution", curves["resolution"][name])
    print("\n".join(curves["errors"]))
    print("plot:", plot_scaling(curves, OUT / "scaling.png"))
