"""Which of several exactly tied candidates `torch.topk` (CPU) keeps, against a stable sort's first k: the
ordinal ranking `vledge eval` uses for retrieval, and what CLIP_benchmark's `recall_at_k` computes with topk.

Rows shaped like image -> text retrieval on a captions file whose captions repeat: CANDIDATES captions, each
one of CAPTIONS distinct texts (drawn at random), every distinct text with one random score per row, so its
copies tie exactly. For each shape, the rows whose k kept candidates (as a set: recall@k only asks whether the
pair is among them) differ from a stable sort's first k. torch picks by `std::partial_sort` when
64 * k <= CANDIDATES and by `std::nth_element` otherwise (aten/src/ATen/native/TopKImpl.h).
Run from the repository root (seconds):
    .venv/bin/python benchmarks/topk_tie_order.py
Writes benchmarks/results/topk_tie_order.json.
"""

import json
from pathlib import Path

import numpy as np
import torch

CANDIDATES = (100, 300, 1000, 5000)
CAPTIONS = (40, 200)  # 40: the parity script's captions file; 200: fewer copies of each
KS = (1, 5, 10)
ROWS = 2000
SEED = 0
OUT = Path("benchmarks/results/topk_tie_order.json")


def rows_that_differ(scores: np.ndarray, k: int) -> int:
    kept = np.sort(torch.topk(torch.from_numpy(scores), k, dim=1)[1].numpy(), axis=1)
    stable = np.sort(np.argsort(-scores, axis=1, kind="stable")[:, :k], axis=1)
    return int((kept != stable).any(1).sum())


def main() -> None:
    rng = np.random.default_rng(SEED)
    results = []
    for n in CANDIDATES:
        for distinct in CAPTIONS:
            caption_of = rng.integers(0, distinct, n)
            scores = rng.standard_normal((ROWS, distinct)).astype(np.float32)[:, caption_of]
            for k in KS:
                row = {"candidates": n, "distinct_captions": distinct, "k": k, "rows": ROWS,
                       "torch_path": "partial_sort" if 64 * k <= n else "nth_element",
                       "rows_whose_kept_set_differs": rows_that_differ(scores, k)}
                results.append(row)
                print(" ".join(f"{key}={value}" for key, value in row.items()))
    OUT.write_text(json.dumps({"torch": torch.__version__, "seed": SEED, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
