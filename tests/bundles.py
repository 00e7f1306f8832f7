"""Build tiny bundles for the runtime and bundle tests (ONNX through export_onnx, OpenVINO IR by conversion)."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vledge.bundle import MANIFEST, write_manifest
from vledge.bundle_files import read_manifest
from vledge.compress.bundle import write_bundle

LABEL_NAMES = ["t-shirt", "trouser", "sneaker", "bag"]
LABEL_TEMPLATES = ["a photo of a {}.", "a picture of a {}."]


@functools.lru_cache(maxsize=None)
def tiny_model():
    """The seeded tiny ViT + BERT dual encoder every runtime test compares against."""
    from tiny_models import tiny_dual_encoder

    return tiny_dual_encoder(seed=0)


def compiled_labels(model, names=LABEL_NAMES, templates=LABEL_TEMPLATES) -> dict:
    """A label set embedded by the PyTorch model: mean of the template prompts, normalised."""
    prompts = [t.format(n) for n in names for t in templates]
    per_prompt = model.embed_texts(prompts).reshape(len(names), len(templates), -1)
    mean = per_prompt.mean(axis=1)
    return {"names": list(names), "embeddings": mean / np.linalg.norm(mean, axis=1, keepdims=True), "templates": list(templates)}


_WORK = Path(tempfile.mkdtemp(prefix="vledge-test-towers-"))
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)


def exported_towers(static_batch=None, static_seq=None, openvino=False) -> dict:
    """The tiny model's towers as ONNX (or OpenVINO IR converted from it), exported once per process.

    Returns ``{kind: (TowerSpec, [files])}`` for write_bundle.
    """
    return _export(static_batch, static_seq, openvino)


@functools.lru_cache(maxsize=None)
def _export(static_batch, static_seq, openvino) -> dict:
    from vledge.compress.export import export_onnx

    folder = _WORK / f"b{static_batch}-s{static_seq}-{'ov' if openvino else 'onnx'}"
    folder.mkdir()
    towers = {}
    for kind in ("image", "text"):
        if openvino:
            import openvino as ov

            spec, (onnx_path,) = exported_towers(static_batch, static_seq)[kind]
            xml = folder / f"{kind}_encoder.xml"
            # read_model is OpenVINO's ONNX frontend, as convert_model uses, without the ~2 s of
            # telemetry that convert_model spends per call on a machine with no network.
            # Keep FP32 weights: save_model halves them by default, which would blur the parity check.
            ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml), compress_to_fp16=False)
            towers[kind] = (dataclasses.replace(spec, file=xml.name, format="openvino"), [xml, xml.with_suffix(".bin")])
        else:
            onnx_path = folder / f"{kind}_encoder.onnx"
            spec = export_onnx(tiny_model(), kind, onnx_path, static_batch=static_batch, static_seq=static_seq)
            towers[kind] = (spec, [onnx_path])
    return towers


def build_bundle(out: Path, *, target="cpu", static_batch=None, static_seq=None, openvino=False,
                 labels=True, overwrite=False, towers=None, probes=True) -> Path:
    """A complete bundle of the tiny model at ``out`` (FP32 towers; ``target`` only picks the chain),
    with self-test probes unless ``probes=False`` (a bundle of an older vledge)."""
    model = tiny_model()
    return write_bundle(
        out,
        towers=towers or exported_towers(static_batch, static_seq, openvino),
        tokenizer=model.tokenizer,
        preprocess=model.preprocess,
        target=target,
        precision="fp32",
        embed_dim=model.embed_dim,
        logit_scale=float(model.logit_scale.detach().exp()),
        labels=compiled_labels(model) if labels else None,
        probes=tiny_probes() if probes else None,
        config={"test": True},
        metrics={},
        provenance={"teacher": "tiny"},
        overwrite=overwrite,
    )


@functools.lru_cache(maxsize=None)
def tiny_probes():
    """The tiny model's probes: picked from seeded sample images and its class prompts."""
    from vledge.compress.bundle import make_probes

    model = tiny_model()
    return make_probes(model, images=sample_images(16, seed=100), texts=[f"a photo of a {c}." for c in model.labels["classes"]])


def sample_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded HW uint8 images at the tiny model's size, with some structure so embeddings differ."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(28, 28), dtype=np.uint8) for _ in range(n)]


def edit_manifest(folder: Path, change) -> None:
    """Apply ``change`` to the parsed ``vledge.json`` of ``folder`` and write it back (hashes untouched)."""
    data = json.loads((folder / MANIFEST).read_text())
    change(data)
    (folder / MANIFEST).write_text(json.dumps(data))


def rehash(folder: Path) -> None:
    """Record the files as they are now: a bundle written broken, rather than changed afterwards."""
    write_manifest(folder, read_manifest(folder, verify=False))
