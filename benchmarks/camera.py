"""The camera benchmark: 224-px teachers (RANDOM WEIGHTS, TIMING ONLY) compressed for cpu, intel-cpu and intel-npu.

For each teacher: write it (``camera_teachers.py``), export its own towers to FP32 ONNX (the reference the
issue's ratios divide by: the same runtime, not PyTorch eager), compress it through ``vledge.compress.compress``
for each target with the camera student (distillation through the teacher cache, so the teacher's forward is paid
once for all three targets) or ``--student teacher``, then time every row in a fresh process: towers at batch 1
and 8, a 77-token prompt, ``classify`` of one 1920x1080 uint8 frame with the compiled label set, the Python side
of a batch-1 ``classify``, peak memory and size. The intel-npu bundle (static shapes) is compiled here, never run
on an NPU (there is none): its row runs the same static IR on OpenVINO's CPU plugin and says so.

The weights are random, so ``top1`` is null in every row; the gate's tolerance is opened (0.99) because it cannot
judge random models. Accuracy at camera size is unmeasured until ``benchmarks/device_checks.sh`` runs on a GPU.

    .venv/bin/python benchmarks/camera.py --quick --out /tmp/camera      # one teacher, < 20 min on 2 cores
    .venv/bin/python benchmarks/camera.py --out benchmarks/results/camera  # the reference run (machine quiet)
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from camera_rows import folder_mb, write_frames  # noqa: E402
from camera_report import ratios, write_plots, write_report  # noqa: E402
from camera_teachers import DEFAULT_ROOT, TEST_TEACHER, WEIGHTS_NOTE, build_teacher  # noqa: E402

log = logging.getLogger("camera")

TEACHERS = ("clip-vit-b32", "clip-vit-b16", "resnet50-bert-base")
QUICK_TEACHERS = ("clip-vit-b32",)
TARGETS = ("cpu", "intel-cpu", "intel-npu")
STUDENT = "camera-vit-shrink"  # the default for 224-px CLIP teachers
# vledge's default for CNN teachers is sized for 28 px images: the camera CNN serves the resnet50 teacher.
CAMERA_STUDENTS = {"resnet50-bert-base": "camera-resnet18-shrink-text"}
# A token distillation in both modes: random weights learn nothing from more, and the towers' speed does not
# depend on it (a real epoch for the ViT-B/16 teacher's cache would be thousands of 17.6-GMAC forwards). The
# warm-cache epoch is measured on its own by benchmarks/distill_cache.py.
DISTILL = {"epochs": 1, "max_samples": 256, "batch_size": 32, "patience": None}
EVAL_SAMPLES = {"quick": 64, "full": 500}
REPEATS = {"quick": 15, "full": 40}


def in_fresh_process(fn: str, *args) -> dict:
    """``camera_rows.fn(*args)`` in a new interpreter (no torch there), so each row's peak memory is its own;
    a failure becomes an error row, never the end of the run."""
    call = json.dumps({"fn": fn, "args": [str(a) if isinstance(a, Path) else a for a in args]})
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "camera_rows.py"), call],
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:400]}
    return json.loads(lines[-1])


def export_fp32(model, folder: Path) -> dict[str, Path]:
    from vledge.compress.export import export_onnx

    paths = {kind: folder / f"{kind}_encoder.onnx" for kind in ("image", "text")}
    for kind, path in paths.items():
        if not path.is_file():
            export_onnx(model, kind, path)
    return paths


def compress_for(teacher: Path, student: str | None, target: str, out: Path, mode: str) -> tuple[Path, dict]:
    from vledge.compress import compress, resolve_config
    from vledge.data.fashion_mnist import CLASSES

    overrides = {"student": student, "data": "fashion-mnist", "tolerance": 0.99, "eval_samples": EVAL_SAMPLES[mode],
                 "distill": DISTILL, "quantize": {"calibration_samples": 32},
                 "cache_dir": str(out.parent / "teacher-cache")}
    bundle = out / f"{teacher.name}-{student or 'default'}-{target}"
    started = time.perf_counter()
    report = compress(teacher, out=bundle, config=resolve_config(target, overrides=overrides), overwrite=True,
                      labels=list(CLASSES))
    stages = {s.name: s.seconds for s in report.stages}
    return bundle, {"seconds": round(time.perf_counter() - started, 1), "stages": stages,
                    "param_ratio": report.metrics.get("param_ratio"), "size_ratio": report.metrics.get("size_ratio")}


def fp32_exports(name: str, folder: Path, student: str | None, work: Path) -> dict:
    """The teacher's own towers and the student's (as built from it, before distillation: same graph, other
    weights) exported to FP32 ONNX, with what the rows need to know about them."""
    from vledge.compress.students import TEACHER, build_student, default_student
    from vledge.models import load_teacher

    teacher = load_teacher(folder)
    student = student or default_student(teacher)
    exports = {"teacher": export_fp32(teacher, work / f"{name}-fp32"), "student_name": student,
               "tokens": teacher.tokenizer.spec.max_length}
    exports["student"] = exports["teacher"] if student == TEACHER else export_fp32(
        build_student(student, teacher), work / f"{name}-{student}-fp32")
    return exports


def onnx_rows(name: str, role: str, paths: dict, tokens: int, args, targets=(None, None)) -> list[dict]:
    rows = []
    for backend, target in zip(("onnxruntime", "openvino"), targets):
        row = in_fresh_process("onnx_row", paths["image"], paths["text"], args.threads, REPEATS[args.mode], backend, tokens)
        model = name if role == "teacher" else f"{role} from {name}"
        rows.append({"name": f"{name if role == 'teacher' else role} fp32 onnx ({backend})",
                     "role": "teacher" if role == "teacher" else "student", "model": model, "teacher": name,
                     "target": target, "size_mb": folder_mb(paths["image"].parent, "*.onnx"), **row})
    return rows


def bundle_rows(name: str, folder: Path, student: str, work: Path, args) -> list[dict]:
    rows = []
    for target in TARGETS:
        base = {"name": f"{student} {target}", "role": "student", "model": f"{student} from {name}", "teacher": name,
                "target": target}
        try:
            bundle, compressed = compress_for(folder, student, target, work / "bundles", args.mode)
        except Exception as exc:  # one target failing leaves the others' rows
            log.exception("compress %s for %s failed", name, target)
            rows.append({**base, "error": f"{type(exc).__name__}: {exc}"[:400]})
            continue
        note = "static shapes compiled for the NPU; no NPU here: timed on OpenVINO's CPU plugin" if target == "intel-npu" else None
        rows.append({**base, "compress": compressed, "note": note,
                     **in_fresh_process("bundle_row", bundle, args.threads, REPEATS[args.mode], "cpu", args.frames)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="writes results.json, report.md and plots here")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_TEACHERS)}, fewer repeats")
    parser.add_argument("--tiny", action="store_true", help=f"the tests' {TEST_TEACHER} only (checks the code paths)")
    parser.add_argument("--student", default=None, help=f"student to compress to (default: {STUDENT} for 224-px "
                        f"CLIP, {CAMERA_STUDENTS['resnet50-bert-base']} for resnet50-bert-base); 'teacher' skips "
                        "distillation")
    parser.add_argument("--teachers-dir", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick or args.tiny else "full"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from vledge.cpu import host_cpu

    names = (TEST_TEACHER,) if args.tiny else QUICK_TEACHERS if args.quick else TEACHERS
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    args.frames = write_frames(work / "frames")
    rows = [{"name": f"{b} baseline", "role": "baseline", **in_fresh_process("baseline_row", b)}
            for b in ("onnxruntime", "openvino")]
    for name in names:
        folder = build_teacher(name, args.teachers_dir)
        exports = fp32_exports(name, folder, args.student or CAMERA_STUDENTS.get(name), work)
        teacher = onnx_rows(name, "teacher", exports["teacher"], exports["tokens"], args)
        for row in teacher:
            row["size_mb"] = folder_mb(folder, "*.safetensors")  # what a user has on disk
        student = exports["student_name"]
        rows += teacher + onnx_rows(name, student, exports["student"], exports["tokens"], args, ("cpu", "intel-cpu"))
        rows += bundle_rows(name, folder, student, work, args)
    for row in rows:
        row.setdefault("top1", None)  # random weights: no accuracy to report
    result = {"weights": WEIGHTS_NOTE, "accuracy": "unmeasured at camera size until benchmarks/device_checks.sh runs "
              "on a GPU", "mode": args.mode, "threads": args.threads, "cpu": host_cpu().to_dict(),
              "teachers": list(names), "student": args.student or "default", "rows": rows,
              "seconds": round(time.perf_counter() - started, 1)}
    result["ratios"] = ratios(rows)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(result, args.out / "report.md")
    write_plots(result, args.out)
    print(f"{len(rows)} rows in {result['seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
