"""Latency against batch size and against image resolution, for any checkpoints and bundles.

`vledge bench` draws the batch-size curves of its rows through the runtime's public API; the resolution
curve cannot go that way (a bundle's towers take the size they were exported at), so it lives here, as
a script that opens the tower files itself: ONNX graphs get symbolic height and width; OpenVINO models
are reshaped to each side in turn (a fully dynamic height and width crashed OpenVINO 2026.4 on an NNCF
INT8 model). Convolutional towers with global pooling take any side; a tower that cannot (a ViT with
fixed position embeddings) gets an error for that point, never an exception.

Each curve runs in a process of its own (a runtime that crashes on an unusual shape loses its curve, not
the run). Knobs at the top; run from the repository root:
    .venv/bin/python benchmarks/scaling.py
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from vledge.bench.measure import BackgroundMeter, Repetitions, latency_stats, time_interleaved

CURVES = {  # name -> (kind, path): "torch" opens a checkpoint, "onnxruntime" / "openvino" a bundle
    "teacher PyTorch FP32": ("torch", "runs/teacher"),
    "cpu bundle INT8 (ORT)": ("onnxruntime", "runs/bundle-cpu"),
}
BATCHES = (1, 2, 4, 8, 16, 32)
RESOLUTIONS = (28, 56, 112, 224)
REPS = Repetitions(warmup=3, min_rounds=10, min_seconds=0.5, max_rounds=100, max_seconds=3.0)
THREADS = 2
DATA = "fashion-mnist"
OUT = Path("runs/scaling")
BUSY_CORES = 0.25  # CPU cores other processes may use while a curve is timed before it is flagged


class _Towers:
    """A pair of towers with the preprocessing and tokenizer that feed them."""

    preprocess = None
    tokenizer = None

    def run(self, kind: str, arrays: list[np.ndarray]):
        raise NotImplementedError

    def inputs(self, kind: str, batch: int, images: list, texts: list[str], side: int | None = None) -> list[np.ndarray]:
        from vledge.images import preprocess

        if kind == "text":
            return list(self.tokenizer([texts[i % len(texts)] for i in range(batch)]))
        spec = self.preprocess if side is None else dataclasses.replace(self.preprocess, image_size=side, resize_to=None)
        return [preprocess([images[i % len(images)] for i in range(batch)], spec)]


class TorchTowers(_Towers):
    def __init__(self, model, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model, self.preprocess, self.tokenizer = model.eval(), model.preprocess, model.tokenizer

    def run(self, kind, arrays):
        import torch

        tower = self.model.image_tower if kind == "image" else self.model.text_tower
        with torch.inference_mode():
            return tower(*[torch.from_numpy(a) for a in arrays])


class _BundleTowers(_Towers):
    def __init__(self, bundle: str | Path):
        from vledge.bundle import safe_join
        from vledge.bundle_files import read_manifest
        from vledge.text import TextTokenizer

        self.root = Path(bundle)
        self.manifest = read_manifest(self.root)
        self.preprocess = self.manifest.preprocess
        self.tokenizer = TextTokenizer.from_file(safe_join(self.root, self.manifest.tokenizer.file), self.manifest.tokenizer)
        self.names = {k: [t.name for t in spec.inputs] for k, spec in self.manifest.towers.items()}

    def file(self, kind: str) -> Path:
        from vledge.bundle import safe_join

        return safe_join(self.root, self.manifest.towers[kind].file)


class OrtTowers(_BundleTowers):
    def __init__(self, bundle, threads: int | None = None):
        super().__init__(bundle)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.sessions = {"image": ort.InferenceSession(self._any_side_image(), options, providers=["CPUExecutionProvider"]),
                         "text": ort.InferenceSession(str(self.file("text")), options, providers=["CPUExecutionProvider"])}

    def _any_side_image(self) -> bytes:
        import onnx

        model = onnx.load(str(self.file("image")))
        for tensor in model.graph.input:
            if tensor.name == self.names["image"][0]:
                for axis, name in ((2, "height"), (3, "width")):
                    tensor.type.tensor_type.shape.dim[axis].dim_param = name
        del model.graph.value_info[:]  # shapes recorded at the export size would contradict other sizes
        return model.SerializeToString()

    def run(self, kind, arrays):
        return self.sessions[kind].run(None, dict(zip(self.names[kind], arrays)))[0]


class OpenVinoTowers(_BundleTowers):
    def __init__(self, bundle, threads: int | None = None, exact: bool = False):
        super().__init__(bundle)
        import openvino as ov

        self.ov, self.core = ov, ov.Core()
        self.config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        if exact:
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        self.requests = {}

    def _request(self, kind: str, side: int | None):
        key = (kind, side)
        if key not in self.requests:
            model = self.core.read_model(str(self.file(kind)))
            if kind == "image":
                model.reshape({self.names["image"][0]: self.ov.PartialShape([-1, 3, side, side])})
            self.requests[key] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self.requests[key]

    def run(self, kind, arrays):
        request = self._request(kind, arrays[0].shape[-1] if kind == "image" else None)
        request.infer(dict(zip(self.names[kind], arrays)))
        return request.get_output_tensor(0).data


def open_towers(kind: str, path: str, threads: int | None = None, **options) -> _Towers:
    """``kind``: "torch" (a checkpoint folder), "onnxruntime" or "openvino" (a bundle folder)."""
    if kind == "torch":
        from vledge.models import load_teacher

        return TorchTowers(load_teacher(path), threads)
    if kind == "openvino":
        return OpenVinoTowers(path, threads, **options)
    return OrtTowers(path, threads)


def _point(towers: _Towers, kind: str, batch: int, side: int | None, images, texts, reps: Repetitions,
           errors: list[str]) -> float | None:
    """Median ms per call at one point, or None (with the reason in ``errors``)."""
    try:
        arrays = towers.inputs(kind, batch, images, texts, side)
        towers.run(kind, arrays)
    except Exception as exc:  # an architecture that cannot take this size: a gap in its curve
        errors.append(f"{kind} batch {batch} side {side}: {type(exc).__name__}: {str(exc)[:160]}")
        return None
    (times,) = time_interleaved([lambda: towers.run(kind, arrays)], reps)
    return latency_stats(times)["p50_ms"]


def sweep(towers: _Towers, images: list, texts: list[str], *, batches=BATCHES, resolutions=RESOLUTIONS,
          reps: Repetitions = REPS) -> dict:
    """``{"image"|"text": {batch: ms}, "resolution": {side: ms}, "errors": [...], "background_cores": x}``,
    keys as strings (as they read back from JSON); the resolution curve is at batch 1."""
    out = {"image": {}, "text": {}, "resolution": {}, "errors": []}
    with BackgroundMeter() as background:
        for kind in ("image", "text"):
            for batch in batches:
                ms = _point(towers, kind, batch, None, images, texts, reps, out["errors"])
                if ms is not None:
                    out[kind][str(batch)] = ms
        for side in resolutions:
            ms = _point(towers, "image", 1, side, images, texts, reps, out["errors"])
            if ms is not None:
                out["resolution"][str(side)] = ms
    out["background_cores"] = background.cores
    return out


def measure_curve(job_path: Path, result_path: Path) -> None:
    """One curve in this process: the ``--curve JOB RESULT`` entry point."""
    job = json.loads(job_path.read_text())
    towers = open_towers(job["kind"], job["path"], job["threads"], **job.get("options", {}))
    probe = np.load(job["probe"])
    images = [probe[k] for k in sorted(probe.files, key=lambda k: int(k.split("_")[1]))][: max(job["batches"])]
    result = sweep(towers, images, job["texts"], batches=job["batches"], resolutions=job["resolutions"],
                   reps=Repetitions(**job["reps"]))
    result_path.with_suffix(".tmp").write_text(json.dumps(result, indent=2) + "\n")
    os.replace(result_path.with_suffix(".tmp"), result_path)


def measure_all(curves: dict, probe: Path, texts: list[str]) -> dict:
    """Every curve, each in a fresh process: ``{"batch": {name: {...}}, "resolution": {name: {...}}, "errors": [...]}``."""
    merged = {"batch": {}, "resolution": {}, "errors": []}
    for i, (name, (kind, path)) in enumerate(curves.items()):
        logging.info("scaling curves of %s", name)
        job, result = OUT / f"job-{i}.json", OUT / f"result-{i}.json"
        job.write_text(json.dumps({"kind": kind, "path": str(path), "threads": THREADS, "probe": str(probe),
                                   "texts": texts, "batches": list(BATCHES), "resolutions": list(RESOLUTIONS),
                                   "reps": REPS.to_dict()}))
        done = subprocess.run([sys.executable, __file__, "--curve", str(job), str(result)])
        if done.returncode != 0 or not result.is_file():
            merged["errors"].append(f"{name}: exit {done.returncode}")
            continue
        cells = json.loads(result.read_text())
        merged["batch"][name] = {"image": cells["image"], "text": cells["text"]}
        merged["resolution"][name] = cells["resolution"]
        merged["errors"] += [f"{name}: {e}" for e in cells["errors"]]
        if (cells.get("background_cores") or 0) > BUSY_CORES:
            merged["errors"].append(f"{name}: other processes used {cells['background_cores']:.2f} CPU cores "
                                    "while its curves were timed; they read slow")
    return merged


if __name__ == "__main__":
    if sys.argv[1:2] == ["--curve"]:
        measure_curve(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    from vledge.bench.plots import plot_scaling
    from vledge.bench.runner import write_probe
    from vledge.data import load_dataset

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    OUT.mkdir(parents=True, exist_ok=True)
    probe, texts, _ = write_probe(load_dataset(DATA, "test"), max(BATCHES), OUT)
    curves = measure_all(CURVES, probe, texts)
    (OUT / "scaling.json").write_text(json.dumps(curves, indent=2) + "\n")
    for name, cells in curves["batch"].items():
        print(name, "image", cells["image"], "text", cells["text"], "resolution", curves["resolution"][name])
    print("\n".join(curves["errors"]))
    print("plot:", plot_scaling(curves, OUT / "scaling.png"))
