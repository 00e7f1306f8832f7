"""The peer adapter: a peer's two cut towers (``vledge.bench.peers``) behind what the worker measures.

Each tower runs in its own framework as a user of Optimum would run it: an ONNX Runtime session or an
OpenVINO compiled model with the framework's defaults, but the benchmark's thread count. Inputs come
from the teacher's own preprocessing and tokenizer (what ``CLIPProcessor`` does for that folder), and
outputs are CLIP's projected embeddings, L2-normalised here as every vledge runtime does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from vledge.images import PreprocessSpec
from vledge.text import TextTokenizer, TokenizerSpec

TEXT_BATCH = 256


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _onnxruntime(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)[0]


def _openvino(path: Path, threads: int):
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()

    def run(feeds):
        request.infer(feeds)
        return request.get_output_tensor(0).data.copy()

    return run


class PeerModel:
    """A peer opened from its folder: ``run`` one tower on its feeds, or embed pixels and texts
    (an ``Embedder`` for ``vledge.evaluate``)."""

    static_text = False

    def __init__(self, folder: str | Path, threads: int):
        folder = Path(folder)
        description = json.loads((folder / "peer.json").read_text())
        self.backend, self.precision = description["backend"], description["precision"]
        self.preprocess = PreprocessSpec.from_dict(description["preprocess"])
        tokenizer = description["tokenizer"]
        self.tokenizer = TextTokenizer.from_file(folder / tokenizer["file"], TokenizerSpec.from_dict(tokenizer["spec"]))
        opener = _onnxruntime if self.backend == "onnxruntime" else _openvino
        towers = description["towers"]
        dtypes = {"pixel_values": "float32", "input_ids": "int64", "attention_mask": "int64"}
        self.inputs = {kind: [(name, dtypes[name]) for name in tower["inputs"]] for kind, tower in towers.items()}
        self._towers = {kind: opener(folder / tower["file"], threads) for kind, tower in towers.items()}
        self.recipe = description.get("recipe", "")

    def run(self, kind: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._towers[kind](feeds)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return _normalised(self.run("image", {"pixel_values": pixels.astype(np.float32, copy=False)}))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts, out = list(texts), []
        for start in range(0, len(texts), TEXT_BATCH):
            ids, mask = self.tokenizer(texts[start : start + TEXT_BATCH])
            out.append(self.run("text", {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}))
        return _normalised(np.concatenate(out))

    def info(self) -> dict:
        return {"placement": f"{self.backend}:cpu", "precision": self.precision, "recipe": self.recipe}
