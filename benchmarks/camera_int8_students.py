"""Which camera image towers static INT8 keeps: cosine of the ort-cpu INT8 tower to its FP32 export, on real photos.

RANDOM WEIGHTS (the camera teachers' and the students built from them): this measures what quantization does to
a tower's arithmetic, not accuracy. Each student is built against the teacher (``build_student``, inherited
weights where the families match); BatchNorm statistics are re-estimated on the calibration photos, as a trained
network would have them (at their initial 0/1 a random ResNet's activations grow layer after layer). The tower
is exported (``vledge.compress.export.export_onnx``) and quantized with the repo's ``ort-cpu`` scheme
(``vledge.compress.quantize.quantize_tower``, the settings ``vledge compress --target cpu`` uses), calibrated on
32 photo views; the cosine is measured on 48 other views. Batch-1 and batch-8 times are ONNX Runtime, one thread.

    .venv/bin/python benchmarks/camera_int8_students.py [--teacher DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from camera_photos import views  # noqa: E402
from camera_teachers import DEFAULT_ROOT, WEIGHTS_NOTE, build_teacher  # noqa: E402

STUDENTS = ("camera-resnet18-shrink-text", "mobilenet-v3-large-shrink-text", "camera-vit-shrink", "clip-shrink-half")
CALIBRATION, HELD_OUT = 32, 48


def refresh_batchnorm_(tower, pixels: np.ndarray) -> bool:
    """Running BatchNorm statistics from ``pixels`` (cumulative average); False when the tower has none."""
    import torch

    norms = [m for m in tower.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    tower.train()
    with torch.no_grad():
        for i in range(0, len(pixels), 8):
            tower(torch.from_numpy(pixels[i : i + 8]))
    tower.eval()
    return bool(norms)


def median_ms(session, pixels: np.ndarray, repeats: int) -> float:
    feed = {session.get_inputs()[0].name: pixels}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def measure_student(name: str, teacher, calibration: np.ndarray, held_out: np.ndarray, work: Path) -> dict:
    import onnxruntime as ort

    from vledge.compress.calibration import CalibrationData
    from vledge.compress.export import export_onnx
    from vledge.compress.quantize import QuantizeConfig, quantize_tower
    from vledge.compress.students import build_student
    from vledge.compress.students.reference import tower_macs

    student = build_student(name, teacher)
    refreshed = refresh_batchnorm_(student.image_tower, calibration)
    fp32 = work / name / "image_fp32.onnx"
    export_onnx(student, "image", fp32)
    feeds = CalibrationData(image=[{"pixel_values": calibration[i : i + 1]} for i in range(len(calibration))])
    spec = quantize_tower(fp32, "image", "ort-cpu", feeds, work / name / "int8", QuantizeConfig())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {kind: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for kind, path in (("fp32", fp32), ("int8", work / name / "int8" / spec.file))}
    out = {k: s.run(None, {"pixel_values": held_out})[0] for k, s in sessions.items()}
    unit = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in out.items()}
    cosine = (unit["fp32"] * unit["int8"]).sum(axis=1)
    times = {f"{k}_b{b}_ms": median_ms(s, held_out[:b], 20 if b == 1 else 8) for k, s in sessions.items() for b in (1, 8)}
    size = teacher.preprocess.image_size
    return {
        "student": name, "image_tower": student.image_tower.config.get("arch"),
        "inherits_image": bool(student.source["inherited"]["image"].get("family_match")),
        "batchnorm_refreshed": refreshed, "params_image": sum(p.numel() for p in student.image_tower.parameters()),
        "image_gmacs": round(tower_macs(student.image_tower, "image", _size_spec(size)) / 1e9, 3),
        "quantization": {k: spec.quantization.get(k) for k in ("scheme", "method", "format", "weight_bits") if k in spec.quantization},
        "cosine_int8_vs_fp32": {"mean": round(float(cosine.mean()), 5), "min": round(float(cosine.min()), 5)},
        **times, "int8_speedup_b8": round(times["fp32_b8_ms"] / times["int8_b8_ms"], 2),
    }


def _size_spec(size: int):
    from types import SimpleNamespace

    return SimpleNamespace(image_size=size, max_length=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, help=f"teacher folder (default: clip-vit-b32 under {DEFAULT_ROOT})")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "camera" / "int8_students.json")
    args = parser.parse_args(argv)
    import torch

    from vledge.cpu import host_cpu
    from vledge.images import preprocess
    from vledge.models import load_teacher

    torch.set_num_threads(1)
    folder = args.teacher or build_teacher("clip-vit-b32")
    teacher = load_teacher(folder)
    photos = views(CALIBRATION + HELD_OUT, seed=0)
    pixels = np.concatenate([preprocess(p, teacher.preprocess) for p in photos])
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.students:
            rows.append(measure_student(name, teacher, pixels[:CALIBRATION], pixels[CALIBRATION:], Path(work)))
            print(json.dumps(rows[-1]))
    result = {"weights": WEIGHTS_NOTE, "teacher": folder.name, "cpu": host_cpu().to_dict(), "threads": 1,
              "photos": f"{CALIBRATION} calibration + {HELD_OUT} held-out views of scikit-image's sample photos",
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
