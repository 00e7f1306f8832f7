"""Latency (ms, median, 2 threads) and cosine to FP32 of each INT8 format, ORT and OpenVINO, on a student-size pair.

The measurement behind the per-tower format choices of the ort-cpu scheme (compress/quantize/ort_cpu.py).
Knobs at the top. Run from the repository root:
    .venv/bin/python benchmarks/quantize_formats.py [image_arch]     (REPS=20 for a quick look)
"""
import logging, os, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np

IMAGE = sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v3_small"
THREADS, REPS, WARMUP, BATCHES = 2, int(os.environ.get("REPS", 150)), 5, (1, 8)
TEXT = {"arch": "bert", "hidden_size": 256, "num_layers": 2, "num_heads": 4, "intermediate_size": 1024}
OUT = Path(os.environ.get("OUT_DIR", tempfile.mkdtemp(prefix="vledge-bench-")))

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models
logging.basicConfig(level=logging.ERROR)
import torch
import nncf; nncf.set_log_level(logging.ERROR)
import onnxruntime as ort, openvino as ov
from onnxruntime.quantization.registry import QLinearOpsRegistry
from tiny_models import TINY_PREPROCESS, tiny_tokenizer
from vledge.data.fashion_mnist import FashionMNIST
from vledge.models.factory import build_dual_encoder
from vledge.compress.export import export_onnx
from vledge.compress.export import export_openvino
from vledge.compress.quantize import CalibrationData, default_config, quantize

torch.manual_seed(0)
image_cfg = {"arch": IMAGE} if IMAGE != "resnet18" else {"arch": "resnet18", "stem": "small"}
model = build_dual_encoder(image_cfg, TEXT, embed_dim=256, tokenizer=tiny_tokenizer(32), preprocess=TINY_PREPROCESS).eval()
train = FashionMNIST("train")
# Random conv towers with BatchNorm at its initial statistics output ~1e-8 (activations vanish with
# depth), which no INT8 format can represent. Re-estimating BN statistics on real images (no training)
# gives the activation scales a trained tower has.
for m in model.image_tower.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.reset_running_stats(); m.momentum = None
model.image_tower.train()
with torch.no_grad():
    for i in range(0, 512, 64):
        model.image_tower(torch.from_numpy(train.batch(range(i, i + 64), model.preprocess).pixels))
model.eval()
calib = CalibrationData.from_dataset(model, train, 128, seed=0)
evald = CalibrationData.from_dataset(model, FashionMNIST("test"), 128, seed=1)

fp32 = {k: OUT / f"fp32_{k}.onnx" for k in ("image", "text")}
for k, p in fp32.items():
    export_onnx(model, k, p)
    export_openvino(p, k, OUT / f"fp32_{k}.xml")

variants = {}  # name -> {kind: (runtime, path)}
def add(name, scheme, runtime="ort", **settings):
    variants[name] = {}
    for k in ("image", "text"):
        spec = quantize(fp32[k], k, default_config(scheme, **settings), calib, OUT / name)
        variants[name][k] = (runtime, OUT / name / spec.file)
variants["ORT FP32"] = {k: ("ort", p) for k, p in fp32.items()}
add("ORT ort-cpu default (auto)", "ort-cpu")
add("ORT static QOperator, weight ops", "ort-cpu", ort_cpu_format={"image": "static", "text": "static"}, image_op_types=["Conv", "MatMul", "Gemm"])
add("ORT static QOperator, +Add/Mul/Pool", "ort-cpu", ort_cpu_format={"image": "static", "text": "static"}, image_op_types=["Conv", "MatMul", "Gemm", "Add", "Mul", "GlobalAveragePool", "Relu", "MaxPool"])
add("ORT static QOperator, all ops", "ort-cpu", ort_cpu_format={"image": "static", "text": "static"}, image_op_types=list(QLinearOpsRegistry), text_op_types=list(QLinearOpsRegistry))
add("ORT dynamic", "ort-cpu", ort_cpu_format={"image": "dynamic", "text": "dynamic"})
add("ORT static QDQ (tensorrt)", "ort-tensorrt")
add("ORT FP16 (cuda file on CPU)", "fp16")
variants["OV FP32"] = {k: ("ov", OUT / f"fp32_{k}.xml") for k in ("image", "text")}
add("OV NNCF mixed", "nncf", runtime="ov")
add("OV NNCF symmetric", "nncf-symmetric", runtime="ov")
add("OV weights-only INT8", "nncf", runtime="ov", weights_only=True)

core = ov.Core()
def session(runtime, path):
    if runtime == "ort":
        o = ort.SessionOptions(); o.intra_op_num_threads = THREADS; o.inter_op_num_threads = 1
        # Spinning threads turn a shared, loaded host's scheduling noise into 10-100x outliers.
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        return lambda feed: s.run(None, feed)[0]
    c = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"})
    r = c.create_infer_request()
    return lambda feed: r.infer(feed)[0].copy()

def embed(fn, kind):
    out = np.concatenate([fn(f) for f in evald.batches(kind, 8)])
    return out / np.linalg.norm(out, axis=1, keepdims=True)

sessions = {(n, k): session(*v[k]) for n, v in variants.items() for k in ("image", "text")}
feeds = {(k, b): evald.batches(k, b)[0] for k in ("image", "text") for b in BATCHES}
times = {key: [] for key in ((n, k, b) for n in variants for k in ("image", "text") for b in BATCHES)}
for key in times:  # warm-up
    for _ in range(WARMUP):
        sessions[key[:2]](feeds[key[1:]])
for _ in range(REPS):  # interleaved rounds: background load hits every variant alike
    for (n, k, b) in times:
        t = time.perf_counter(); sessions[(n, k)](feeds[(k, b)]); times[(n, k, b)].append(1e3 * (time.perf_counter() - t))

refs = {("ort", k): embed(sessions[("ORT FP32", k)], k) for k in ("image", "text")}
refs.update({("ov", k): embed(sessions[("OV FP32", k)], k) for k in ("image", "text")})
print(f"image tower {IMAGE} @28px, text BERT 2x256, embed 256; {THREADS} threads, ms best / median of {REPS} interleaved runs; "
      f"cosine to same-runtime FP32 over 128 Fashion-MNIST test images / captions (mean / min)")
print("| variant | image b1 | image b8 | text b1 | text b8 | image cos | text cos |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for n, v in variants.items():
    cells = [f"{min(times[(n, k, b)]):.2f} / {statistics.median(times[(n, k, b)]):.2f}" for k in ("image", "text") for b in BATCHES]
    for k in ("image", "text"):
        c = (embed(sessions[(n, k)], k) * refs[(v[k][0], k)]).sum(1)
        cells.append(f"{c.mean():.4f} / {c.min():.4f}")
    print(f"| {n} | " + " | ".join(cells) + " |")
print("sizes (KB):", {n: {k: round(os.path.getsize(p) / 1024 + (os.path.getsize(p.with_suffix('.bin')) / 1024 if p.suffix == '.xml' else 0)) for k, (_, p) in v.items()} for n, v in variants.items()})
