#!/usr/bin/env bash
# Every check that needs an NVIDIA GPU, in one go (run it on a machine with CUDA and TensorRT).
# Swaps onnxruntime for onnxruntime-gpu in .venv (the two overwrite each other's files), runs the
# tests marked `gpu`, then compresses the tiny CLIP test teacher for `cuda` and `jetson` and runs both
# bundles on the GPU with strict=True, so a silent CPU fallback fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m pip uninstall -y -q onnxruntime
.venv/bin/python -m pip install -q "onnxruntime-gpu==1.32.0"
.venv/bin/python -m pytest -q -m gpu tests/
.venv/bin/python - <<'PY'
import sys, tempfile
from pathlib import Path
sys.path.insert(0, "tests")
import numpy as np
import vledge
from tiny_clip import make_tiny_clip_folder
from vledge.compress import compress, resolve_config

fast = {"data": "digits", "distill": {"epochs": 1, "max_samples": 256}, "eval_samples": 96, "tolerance": 0.99}
root = Path(tempfile.mkdtemp())
teacher = make_tiny_clip_folder(root / "teacher")
for target, device in (("cuda", "cuda"), ("jetson", "tensorrt")):
    compress(teacher, out=root / target, config=resolve_config(target, overrides=fast))
    model = vledge.load(root / target, device=device, strict=True)
    out = model.classify(np.zeros((30, 30, 3), np.uint8), ["a cat", "a dog"])
    print(target, model.info()["backend"], model.info()["device"], out)
PY
