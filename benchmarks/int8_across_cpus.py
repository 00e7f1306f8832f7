"""INT8 weight formats across CPUs: zero-shot top-1, cosine to FP32 and latency of one trained image tower
(the demo teacher's ResNet-18) on ONNX Runtime (U8S8 with 8- and 7-bit weights, U8U8) and OpenVINO (NNCF
INT8 with 8- and 7-bit weights), each beside its FP32 tower, and the demo bundle's top-1.

The same files are evaluated natively and under QEMU's AVX2-only CPU model (EPYC-Rome: no AVX-512, no
VNNI), where ONNX Runtime and OpenVINO dispatch to their AVX2 integer kernels as on such hardware. Latency is timed
natively only (QEMU emulates instructions: its times mean nothing). Knobs at the top. Run from the
repository root, after scripts/demo.sh (it reads the demo teacher and bundle):
    .venv/bin/python benchmarks/int8_across_cpus.py build      # export + quantize the teacher's image tower
    .venv/bin/python benchmarks/int8_across_cpus.py eval       # top-1, cosine, latency on this CPU (JSON in WORK)
    qemu-x86_64 -cpu EPYC-Rome .venv/bin/python benchmarks/int8_across_cpus.py eval
Or all three, results into benchmarks/results/int8_across_cpus.json: bash benchmarks/int8_across_cpus.sh
"""
import json, os, statistics, sys, time
from pathlib import Path
import numpy as np

RUNS = Path(os.environ.get("VLEDGE_RUNS", "runs/demo"))
WORK = Path(os.environ.get("WORK", "/tmp/vledge-int8-across-cpus"))
TEACHER, BUNDLE = RUNS / "teacher", RUNS / "bundle-cpu"
N_TOWER, N_BUNDLE = int(os.environ.get("N_TOWER", 1000)), int(os.environ.get("N_BUNDLE", 10000))
THREADS, REPS, BATCHES = 2, int(os.environ.get("REPS", 200)), (1, 8)
# (runtime, file) per variant; the first of each runtime is its FP32 reference.
VARIANTS = {
    "ort fp32": ("ort", "fp32.onnx"),
    "ort int8 U8S8 8-bit weights": ("ort", "image_encoder.onnx"),
    "ort int8 U8S8 7-bit weights (default)": ("ort", "image_encoder.7bit.onnx"),
    "ort int8 U8U8 8-bit weights": ("ort", "u8u8.onnx"),
    "openvino fp32": ("ov", "fp32.onnx"),
    "openvino int8 8-bit weights": ("ov", "ov/image_encoder.xml"),
    "openvino int8 7-bit weights (default)": ("ov", "ov/image_encoder.7bit.xml"),
}


def build():
    import torch
    from vledge.compress.export import export_onnx
    from vledge.compress.quantize import CalibrationData, default_config, quantize
    from vledge.data.fashion_mnist import FashionMNIST
    from vledge.models.checkpoint import load_dual_encoder

    import logging, nncf
    nncf.set_log_level(logging.ERROR)
    torch.manual_seed(0)
    model = load_dual_encoder(TEACHER).eval()
    WORK.mkdir(parents=True, exist_ok=True)
    export_onnx(model, "image", WORK / "fp32.onnx")
    calibration = CalibrationData.from_dataset(model, FashionMNIST("train"), 128, seed=0)
    spec = quantize(WORK / "fp32.onnx", "image", default_config("ort-cpu", weight_bits=8), calibration, WORK)
    u8u8(calibration)
    ov = quantize(WORK / "fp32.onnx", "image", default_config("nncf", weight_bits=8), calibration, WORK / "ov")
    classes, templates = model.labels["classes"], model.labels["templates"]
    per_prompt = model.embed_texts([t.format(c) for c in classes for t in templates]).reshape(len(classes), len(templates), -1)
    text = per_prompt.mean(1)
    np.save(WORK / "class_embeddings.npy", text / np.linalg.norm(text, axis=1, keepdims=True))
    (WORK / "preprocess.json").write_text(json.dumps(model.preprocess.to_dict()))
    _write("build", {"built": str(WORK), "calibration_cosine": {
        "ort 8-bit": spec.quantization["cosine_to_fp32"], "ort 7-bit": spec.fallback["cosine_to_fp32"],
        "openvino 8-bit": ov.quantization["cosine_to_fp32"], "openvino 7-bit": ov.fallback["cosine_to_fp32"]}})


def u8u8(calibration):
    """The same static QOperator graph with uint8 weights: exact on every CPU, through other kernels."""
    from onnxruntime.quantization import QuantFormat, QuantizationMode, QuantType
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from vledge.compress.quantize import default_config
    from vledge.compress.quantize.ort_common import CONV_STATIC_OPS, _calibrate, _prepared, _quantize

    qconfig = AutoQuantizationConfig.avx2(is_static=True, per_channel=True, operators_to_quantize=CONV_STATIC_OPS)
    qconfig.format, qconfig.mode = QuantFormat.QOperator, QuantizationMode.QLinearOps
    qconfig.weights_dtype, qconfig.weights_symmetric = QuantType.QUInt8, False
    with _prepared(WORK / "fp32.onnx") as prepared:
        ranges, _ = _calibrate(prepared, "image", calibration, CONV_STATIC_OPS, default_config("ort-cpu"), symmetric=False)
        _quantize(prepared, qconfig, ranges, WORK / "u8u8.onnx")


def cpu_seen():
    """The CPU as its instructions see it (cpuid, through numpy): under QEMU, /proc/cpuinfo is the host's."""
    from numpy._core._multiarray_umath import __cpu_features__ as f
    return {"avx2": f["AVX2"], "avx512f": f["AVX512F"], "avx512_vnni": f["AVX512VNNI"]}


def evaluate():
    import onnxruntime as ort
    import vledge
    from vledge.cpu import host_cpu
    from vledge.data.fashion_mnist import FashionMNIST
    from vledge.images import PreprocessSpec

    emulated = not cpu_seen()["avx512_vnni"] and "avx512_vnni" in open("/proc/cpuinfo").read()
    test = FashionMNIST("test")
    spec = PreprocessSpec.from_dict(json.loads((WORK / "preprocess.json").read_text()))
    classes = np.load(WORK / "class_embeddings.npy")
    batch = test.batch(range(N_TOWER), spec)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    result = {"cpu": {"proc_cpuinfo_model": host_cpu().model, "cpuid": cpu_seen(),
                      "emulated_by_qemu": emulated}, "towers": {}, "images": N_TOWER}
    embeds, reference = {}, {}
    for name, (runtime, file) in VARIANTS.items():
        run = _runner(runtime, WORK / file, opts)
        out = np.concatenate([run(batch.pixels[i:i + 50]) for i in range(0, N_TOWER, 50)])
        embeds[name] = out / np.linalg.norm(out, axis=1, keepdims=True)
        row = {"top1": float(((embeds[name] @ classes.T).argmax(1) == batch.labels).mean())}
        if runtime in reference:
            cos = (embeds[name] * embeds[reference[runtime]]).sum(1)
            row["cosine_to_fp32"] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}
        reference.setdefault(runtime, name)
        if not emulated:
            row["latency_ms_median"] = {b: _median_ms(run, batch.pixels[:b]) for b in BATCHES}
        result["towers"][name] = row
    if BUNDLE.is_dir():
        model = vledge.load(BUNDLE, device="cpu", threads=THREADS)
        top = [r.label for r in model.classify(list(test.pixels[:N_BUNDLE]), top_k=1)]
        names = model.label_set.names
        result["bundle"] = {"path": str(BUNDLE), "images": N_BUNDLE,
                            "top1": float(np.mean([names.index(t) == y for t, y in zip(top, test.labels[:N_BUNDLE])])),
                            "towers": {k: {"file": t.file, "requires_isa": t.requires_isa} for k, t in model.manifest.towers.items()}}
    _write("emulated" if emulated else "native", result)


def _write(name, result):
    (WORK / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def _runner(runtime, path, opts):
    if runtime == "ort":
        import onnxruntime as ort
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"pixel_values": x})[0]
    import openvino as ov
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": THREADS}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    return lambda x: compiled(x)[0]


def _median_ms(run, x):
    for _ in range(10):
        run(x)
    times = []
    for _ in range(REPS):
        start = time.perf_counter(); run(x); times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


if __name__ == "__main__":
    {"build": build, "eval": evaluate}[sys.argv[1]]()
