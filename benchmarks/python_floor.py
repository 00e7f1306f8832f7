"""How small the Python-side share of a batch-1 ``classify`` can get on this machine, whatever the API does.

Times, interleaved in one process, the bare image-tower call (``InferenceSession.run``) against
- ``classify``: ``EdgeModel.classify(frame, labels)``, label embeddings cached, as the benchmark times it;
- ``floor``: the least work any wrapper must add: normalise the frame by table lookup into a preallocated
  array, the same bare tower call, one matrix product with the label weights, the cosine scaling, a softmax
  and a top-k of the 10 logits in plain Python (cheaper than numpy at this size). No checks, no batching.
- ``lookup``: the normalisation alone.
The share is 1 - tower / end-to-end, as in ``vledge.bench.worker``. Knobs at the top; run from the
repository root on a quiet machine:
    .venv/bin/python benchmarks/python_floor.py
Writes benchmarks/results/python_floor.json.
"""

import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np

import vledge
from vledge.images import _normalise_table

BUNDLE = "runs/bundle-cpu"
THREADS = 2
ROUNDS = 5000
TOP_K = 5
OUT = Path("benchmarks/results/python_floor.json")


def main() -> dict:
    model = vledge.load(BUNDLE, threads=THREADS)
    session = model.runtime._sessions["image"]
    input_name = model.manifest.towers["image"].inputs[0].name
    labels = model.label_set.names
    names, weights = model._label_weights(labels, None)
    spec = model.manifest.preprocess
    frame = np.random.default_rng(0).integers(0, 256, (spec.image_size, spec.image_size, 3), dtype=np.uint8)
    table = _normalise_table(spec)
    pixels = np.empty((1, 3, spec.image_size, spec.image_size), np.float32)

    def lookup():
        for c in range(3):
            np.take(table[c], frame[..., c], out=pixels[0, c], mode="clip")
        return pixels

    def floor():
        embedding = session.run(None, {input_name: lookup()})[0]
        logits = (embedding @ weights)[0].tolist()
        inverse = 1.0 / max(math.sqrt(float(embedding[0] @ embedding[0])), 1e-12)
        top = max(logits)
        exps = [math.exp((v - top) * inverse) for v in logits]
        total = sum(exps)
        order = sorted(range(len(exps)), key=exps.__getitem__, reverse=True)[:TOP_K]
        return [(names[j], exps[j] / total) for j in order]

    feed = {input_name: lookup()}
    calls = {"classify": lambda: model.classify(frame, labels, top_k=TOP_K), "floor": floor,
             "tower": lambda: session.run(None, feed), "lookup": lookup}
    expected = model.classify(frame, labels, top_k=TOP_K).top
    if [n for n, _ in floor()] != [n for n, _ in expected]:
        raise SystemExit("the floor path ranks the labels differently from classify")
    times = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            started = time.perf_counter_ns()
            call()
            times[name].append(time.perf_counter_ns() - started)
    us = {name: round(statistics.median(t) / 1000, 1) for name, t in times.items()}
    return {
        "bundle": BUNDLE, "threads": THREADS, "rounds": ROUNDS, "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_1min": os.getloadavg()[0], "median_us": us,
        "share_classify": round(1 - us["tower"] / us["classify"], 3),
        "share_floor": round(1 - us["tower"] / us["floor"], 3),
        "lookup_share_of_floor_e2e": round(us["lookup"] / us["floor"], 3),
    }


if __name__ == "__main__":
    results = main()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
