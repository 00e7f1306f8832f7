"""benchmarks/camera.py: its ratios and report on given rows (fast), and one run on the tests' 224-px CLIP (slow)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
KEYS = ("name", "role", "precision", "placement", "image_b1_p50_ms", "image_b8_p50_ms", "text_b1_p50_ms", "top1",
        "peak_rss_mb", "size_mb", "model", "frame_b1_p50_ms", "python_us")


def script(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(role, placement, precision, target=None, **times):
    return {"name": f"{role} {placement} {precision}", "role": role, "teacher": "t", "placement": placement,
            "precision": precision, "target": target, **times}


ROWS = [
    {"name": "onnxruntime baseline", "role": "baseline", "peak_rss_mb": 50.0},
    row("teacher", "onnxruntime:cpu", "fp32", image_b1_p50_ms=30.0, text_b1_p50_ms=8.0, size_mb=600.0),
    row("teacher", "openvino:cpu", "fp32", image_b1_p50_ms=20.0, text_b1_p50_ms=6.0),
    row("student", "onnxruntime:cpu", "fp32", "cpu", image_b8_p50_ms=40.0),
    row("student", "openvino:cpu", "fp32", "intel-cpu", image_b8_p50_ms=30.0),
    row("student", "onnxruntime:cpu", "int8", "cpu", image_b1_p50_ms=2.5, image_b8_p50_ms=16.0, text_b1_p50_ms=1.6,
        frame_b1_p50_ms=3.0, frame_tower_b1_p50_ms=2.4, size_mb=20.0, peak_rss_mb=100.0),
    row("student", "openvino:CPU", "int8", "intel-cpu", image_b1_p50_ms=2.0, image_b8_p50_ms=10.0, text_b1_p50_ms=2.0),
    {"name": "broken", "role": "student", "teacher": "t", "target": "intel-npu", "error": "ExportError: ..."},
]


def test_ratios_divide_the_rows_the_issue_names():
    checks = {c["ratio"]: c for c in script("camera_report").ratios(ROWS)["t"]}
    assert checks["student INT8 / FP32, image b8, ONNX Runtime"]["value"] == 2.5
    assert checks["student INT8 / FP32, image b8, OpenVINO"]["value"] == 3.0
    assert checks["teacher FP32 ONNX / student INT8, image b1, ONNX Runtime"] == {
        "ratio": "teacher FP32 ONNX / student INT8, image b1, ONNX Runtime", "value": 12.0, "target": ">= 10", "passed": True}
    assert checks["teacher FP32 ONNX / student INT8, text b1 (77 tokens), ONNX Runtime"]["value"] == 5.0
    assert checks["teacher FP32 / student INT8, text b1 (77 tokens), OpenVINO"]["passed"] is False  # 3.0 < 4
    assert checks["full-HD frame classify / image tower b1 timed beside it, ONNX Runtime"]["value"] == 1.25
    assert checks["teacher safetensors / cpu bundle size"]["value"] == 30.0
    memory = next(c for c in checks.values() if c["ratio"].startswith("peak RSS"))
    assert "budget 126.0" in memory["ratio"] and memory["passed"] is True  # 3 x 20 + 50 + 16


def test_report_says_random_weights_and_keeps_error_rows(tmp_path):
    report = script("camera_report")
    result = {"weights": "random weights: timing only", "accuracy": "unmeasured", "mode": "quick", "threads": 2,
              "seconds": 1.0, "rows": ROWS, "cpu": {"model": "X", "machine": "x86_64", "isa": ["avx2"], "int8": "n"},
              "ratios": report.ratios(ROWS)}
    report.write_report(result, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "**random weights: timing only.**" in text and "| broken | student | error: ExportError" in text
    assert "| " + " | ".join(KEYS) + " |" in text


@pytest.mark.slow
def test_quick_run_on_the_tiny_224_px_teacher(tmp_path):
    assert script("camera").main(["--tiny", "--out", str(tmp_path / "out"), "--teachers-dir", str(tmp_path / "t")]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "random weights" in result["weights"] and "unmeasured" in result["accuracy"]
    assert set(result["cpu"]) >= {"model", "isa"}
    rows = [r for r in result["rows"] if r["role"] != "baseline"]
    assert [r for r in rows if "error" in r] == []
    assert {r["target"] for r in rows if r["precision"] != "fp32"} == {"cpu", "intel-cpu", "intel-npu"}
    for r in rows:
        assert set(KEYS) <= set(r) and r["top1"] is None
    bundle = next(r for r in rows if r["target"] == "cpu" and r["precision"] != "fp32")
    assert bundle["frame_b1_p50_ms"] > 0 and bundle["python_us"] >= 0 and bundle["text_tokens"] == 77
    assert all(c["value"] is not None for c in result["ratios"]["tiny-clip-224"])
    assert (tmp_path / "out" / "latency.png").is_file() and (tmp_path / "out" / "report.md").is_file()


def test_frames_hold_the_test_image_in_the_centre_crop():
    import numpy as np

    frames = script("camera_frames")
    image = np.zeros((28, 28), np.uint8)
    image[:, 14:] = 255
    frame = frames.to_frame(image)
    assert frame.shape == (1080, 1920, 3) and frame[:, :420].max() == 0 and frame[:, 1500:].max() == 0
    assert frame[540, 420 + 100].max() < 10 and frame[540, 1500 - 100].min() > 245
