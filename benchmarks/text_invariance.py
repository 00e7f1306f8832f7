"""Does a prompt's embedding depend on its batch? Text towers under each CPU scheme, before and after.

For each text tower: FP32, ort-cpu dynamic INT8 (the text default before), ort-cpu static INT8 (the
default now), NNCF INT8 on OpenVINO at f32 and at its default precision (bf16 where the CPU has it).
Per variant: batch variance (max abs difference, on the normalised embedding, of a prompt alone against
the same prompt in a batch of 8 with longer and shorter prompts, and padded to the maximum length),
cosine to FP32 on held-out captions, latency at the maximum length at batch 1 and 8, one thread, median
and best (variants timed in interleaved rounds, so a shared machine's load falls on all alike; the best
is the least disturbed call), file size.

Towers: the tests' tiny BERT, the demo student's (BERT 2x128) and teacher's (BERT 4x256) text towers,
and a CLIP text tower of ViT-B/32's size (12 layers, width 512, 8 heads, vocab 49408, 77 tokens). All
weights are seeded random: timing and quantization error only, no accuracy. Knobs at the top. Run from
the repository root:  .venv/bin/python benchmarks/text_invariance.py   (REPS=10 for a quick look)
"""
import json, logging, os, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np

THREADS, REPS, WARMUP, PROMPTS = 1, int(os.environ.get("REPS", 30)), 3, 8
OUT = Path(os.environ.get("OUT_DIR", tempfile.mkdtemp(prefix="vledge-text-")))
RESULT = Path(__file__).parent / "results" / "text_invariance.json"
CLIP_TEXT = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
             "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}
TOWERS = {  # name: (text tower config, max length)
    "tests tiny BERT 1x32": ({"arch": "bert", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}, 16),
    "demo student BERT 2x128": ({"arch": "bert", "hidden_size": 128, "num_layers": 2, "num_heads": 2, "intermediate_size": 512}, 32),
    "demo teacher BERT 4x256": ({"arch": "bert", "hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024}, 32),
    "CLIP ViT-B/32 text 12x512": ({"arch": "clip-text", "hf_config": CLIP_TEXT}, 77),
}

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models
logging.basicConfig(level=logging.ERROR)
import torch
import nncf; nncf.set_log_level(logging.ERROR)
import onnxruntime as ort, openvino as ov
from tiny_models import TINY_IMAGE, TINY_PREPROCESS, tiny_tokenizer
from vledge.compress.export import export_onnx
from vledge.compress.quantize import CalibrationData, default_config, quantize
from vledge.cpu import host_cpu
from vledge.data.fashion_mnist import FashionMNIST
from vledge.models.factory import build_dual_encoder

core, rng = ov.Core(), np.random.default_rng(0)


def build(config, max_length):
    tok = tiny_tokenizer(max_length)
    if config["arch"] == "clip-text":  # first-EOS pooling on the wordpiece tokenizer's [SEP]
        ids = {k: tok.backend.token_to_id(t) for k, t in (("bos_token_id", "[CLS]"), ("eos_token_id", "[SEP]"))}
        config = {**config, "hf_config": {**config["hf_config"], **ids, "pad_token_id": 0}}
    torch.manual_seed(0)
    return build_dual_encoder(TINY_IMAGE["vit"], config, embed_dim=512 if "hf_config" in config else 64,
                              tokenizer=tok, preprocess=TINY_PREPROCESS).eval()


def runner(runtime, path, hint=None):
    if runtime == "ort":
        options = ort.SessionOptions(); options.intra_op_num_threads = THREADS; options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda feed: session.run(["embeds"], feed)[0]
    config = {"INFERENCE_NUM_THREADS": THREADS, **({"INFERENCE_PRECISION_HINT": hint} if hint else {})}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    return lambda feed: compiled(feed)[0]


def prompts(model, max_length):
    """Random-id prompts of spread lengths, [CLS] first and [SEP] last, as one padded batch."""
    lengths = np.linspace(3, max_length, PROMPTS).astype(int)[rng.permutation(PROMPTS)]
    cls, sep = (model.tokenizer.backend.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    vocab = model.tokenizer.backend.get_vocab_size()
    ids, mask = np.zeros((PROMPTS, max_length), np.int64), np.zeros((PROMPTS, max_length), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = [cls, *rng.integers(5, vocab, n - 2), sep]; mask[row, :n] = 1
    width = lengths.max()
    return lengths, {"input_ids": ids[:, :width], "attention_mask": mask[:, :width]}, {"input_ids": ids, "attention_mask": mask}


def normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def batch_variance(run, lengths, batch, padded):
    together, worst = normalise(run(batch)), 0.0
    for i, n in enumerate(lengths):
        alone = normalise(run({k: v[i : i + 1, :n] for k, v in batch.items()}))[0]
        full = normalise(run({k: v[i : i + 1] for k, v in padded.items()}))[0]
        worst = max(worst, float(np.abs(alone - together[i]).max()), float(np.abs(alone - full).max()))
    return worst


def measure(name, config, max_length, train, test):
    model, folder = build(config, max_length), OUT / name.replace(" ", "_").replace("/", "")
    fp32 = folder / "fp32.onnx"
    export_onnx(model, "text", fp32)
    calibration = CalibrationData.from_dataset(model, train, 128, seed=0)
    held_out = CalibrationData.from_dataset(model, test, 64, seed=1).batches("text", 8)
    files = {"FP32 (ORT)": ("ort", fp32, None)}
    for label, fmt in (("ort-cpu dynamic INT8 (before)", "dynamic"), ("ort-cpu static INT8 (now)", "static")):
        spec = quantize(fp32, "text", default_config("ort-cpu", ort_cpu_format={"text": fmt}), calibration, folder / fmt)
        files[label] = ("ort", folder / fmt / spec.file, None)
    spec = quantize(fp32, "text", default_config("nncf"), calibration, folder / "nncf")
    files["nncf INT8, OpenVINO f32"] = ("ov", folder / "nncf" / spec.file, "f32")
    files["nncf INT8, OpenVINO default precision"] = ("ov", folder / "nncf" / spec.file, None)
    runs = {label: runner(*f) for label, f in files.items()}
    lengths, batch, padded = prompts(model, max_length)
    reference = normalise(np.concatenate([runs["FP32 (ORT)"](f) for f in held_out]))
    rows = {}
    for label, run in runs.items():
        cos = (reference * normalise(np.concatenate([run(f) for f in held_out]))).sum(1)
        size = sum(p.stat().st_size for p in files[label][1].parent.glob(files[label][1].stem + ".*"))
        rows[label] = {"batch_variance": batch_variance(run, lengths, batch, padded), "cosine_mean": round(float(cos.mean()), 5),
                       "cosine_min": round(float(cos.min()), 5), "size_mb": round(size / 1e6, 2)}
    for label, times in interleaved_times(runs, padded).items():
        rows[label].update(times)
    return rows


def interleaved_times(runs, padded):
    feeds = {b: {k: np.repeat(v[:1], b, 0) for k, v in padded.items()} for b in (1, 8)}
    times = {label: {1: [], 8: []} for label in runs}
    for rep in range(WARMUP + REPS):
        for label, run in runs.items():
            for b, feed in feeds.items():
                start = time.perf_counter(); run(feed); elapsed = (time.perf_counter() - start) * 1e3
                if rep >= WARMUP:
                    times[label][b].append(elapsed)
    return {label: {f"b{b}_{stat}_ms": round(fn(t[b]), 2) for b in (1, 8) for stat, fn in (("p50", statistics.median), ("min", min))}
            for label, t in times.items()}


if __name__ == "__main__":
    train, test = FashionMNIST("train"), FashionMNIST("test")
    cpu = host_cpu()
    results = {"cpu": {"model": cpu.model, "isa": cpu.isa}, "threads": THREADS, "reps": REPS, "load_before": os.getloadavg()[0],
               "weights": "seeded random: timing and quantization error only", "towers": {}}
    for name, (config, max_length) in TOWERS.items():
        results["towers"][name] = {"max_length": max_length, "variants": measure(name, config, max_length, train, test)}
        print(f"\n{name} ({max_length} tokens)")
        for label, r in results["towers"][name]["variants"].items():
            print(f"  {label:40s} variance {r['batch_variance']:.1e}  cos {r['cosine_mean']:.5f}/{r['cosine_min']:.5f}  "
                  f"b1 {r['b1_p50_ms']:7.2f} ({r['b1_min_ms']:7.2f}) ms  b8 {r['b8_p50_ms']:7.2f} ({r['b8_min_ms']:7.2f}) ms  {r['size_mb']:6.2f} MB", flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=1) + "\n")
