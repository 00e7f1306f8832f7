"""What spin-waiting costs on a shared CPU: a fixed torch training workload and ONNX Runtime batch-1
latency, with OpenMP's own wait policy (unset: spin, then sleep) or PASSIVE (vledge's default), and ONNX Runtime's
threads spinning or not, on the
machine as it is and while a CPU burner (one busy loop per core) runs beside them.

    .venv/bin/python benchmarks/spin_wait.py [--bundle BUNDLE] [--out results.json]

Every measurement runs in a fresh process (OpenMP reads OMP_WAIT_POLICY once, when torch loads);
variants alternate so a change in the machine's load hits them alike. Record what else was running.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

THREADS = 2  # torch and ONNX Runtime intra-op threads
STEPS = 6  # training steps timed (after 2 warm-up steps)
BATCH = 32
ORT_CALLS = 200  # batch-1 image-tower calls timed (after 30 warm-up calls)
ROUNDS = 1  # each variant measured this many times, alternating

TRAIN_CHILD = """
import time, torch
from vledge.data import load_dataset
from vledge.train.config import TrainConfig
from vledge.train.loop import new_model
torch.set_num_threads({threads})
torch.manual_seed(0)
config = TrainConfig(data="digits")
data = load_dataset("digits", "train")
model = new_model(config, data)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
prompts = [f"a photo of the digit {{c}}" for c in data.classes]
ids, mask = model.tokenize(prompts * ({batch} // len(prompts) + 1))
ids, mask = ids[:{batch}], mask[:{batch}]
pixels = torch.randn({batch}, 3, config.image_size, config.image_size)
def step():
    image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
    text = torch.nn.functional.normalize(model.encode_text(ids, mask), dim=-1)
    logits = image @ text.T * 10
    loss = torch.nn.functional.cross_entropy(logits, torch.arange({batch}))
    optimizer.zero_grad(); loss.backward(); optimizer.step()
for _ in range(2):
    step()
start = time.perf_counter()
for _ in range({steps}):
    step()
print((time.perf_counter() - start) / {steps})
"""

ORT_CHILD = """
import time, statistics, numpy as np, onnxruntime as ort
opts = ort.SessionOptions()
opts.intra_op_num_threads = {threads}
opts.inter_op_num_threads = 1
opts.add_session_config_entry("session.intra_op.allow_spinning", "{spin}")
session = ort.InferenceSession({model!r}, opts, providers=["CPUExecutionProvider"])
feed = {{i.name: np.random.default_rng(0).standard_normal([1] + [d if isinstance(d, int) else 1 for d in i.shape[1:]])
        .astype(np.float32) for i in session.get_inputs()}}
for _ in range(30):
    session.run(None, feed)
times = []
for _ in range({calls}):
    start = time.perf_counter(); session.run(None, feed); times.append(time.perf_counter() - start)
print(statistics.median(times) * 1000)
"""


def burn(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def child(script: str, env_extra: dict) -> float:
    env = {**os.environ, **env_extra}
    env = {k: v for k, v in env.items() if v is not None}  # None: unset, the OpenMP runtime's own default
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def measure(variants: dict[str, tuple[str, dict]], loaded: bool) -> dict[str, list[float]]:
    burners = []
    if loaded:
        stop_at = time.time() + 3600
        burners = [multiprocessing.Process(target=burn, args=(stop_at,), daemon=True) for _ in range(os.cpu_count() or 2)]
        for b in burners:
            b.start()
    try:
        results = {name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, (script, env) in variants.items():
                results[name].append(child(script, env))
                print(f"  {'loaded' if loaded else 'as is'} {name}: {results[name][-1]:.4f}", flush=True)
        return results
    finally:
        for b in burners:
            b.terminate()
            b.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="a bundle whose image tower ONNX Runtime times (skipped without one)")
    parser.add_argument("--onnx", help="or any ONNX image model with one float input (batch dimension first)")
    parser.add_argument("--out", default="spin_wait.json")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    base = {"OMP_NUM_THREADS": str(THREADS)}
    variants = {}
    if not args.skip_train:
        train = TRAIN_CHILD.format(threads=THREADS, batch=BATCH, steps=STEPS)
        variants["train_s_per_step_default"] = (train, {**base, "OMP_WAIT_POLICY": None})
        variants["train_s_per_step_passive"] = (train, {**base, "OMP_WAIT_POLICY": "PASSIVE"})
    model = args.onnx
    if args.bundle:
        model = os.path.join(args.bundle, json.load(open(os.path.join(args.bundle, "vledge.json")))["towers"]["image"]["file"])
    if model:
        for spin in ("1", "0"):
            name = f"ort_image_b1_ms_{'spin' if spin == '1' else 'no_spin'}"
            variants[name] = (ORT_CHILD.format(threads=THREADS, spin=spin, model=model, calls=ORT_CALLS), base)
    report = {"cpu_count": os.cpu_count(), "load_before": os.getloadavg(), "threads": THREADS, "steps": STEPS,
              "batch": BATCH, "onnx": model}
    for loaded in (False, True):
        runs = measure(variants, loaded)
        report["loaded" if loaded else "as_is"] = {k: {"runs": v, "median": statistics.median(v)} for k, v in runs.items()}
    report["load_after"] = os.getloadavg()
    json.dump(report, open(args.out, "w"), indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
