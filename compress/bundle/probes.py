"""Self-test probes: a few inputs per tower and their FP32 student embeddings, recorded in every bundle
so that ``vledge.load`` can check the towers on the device it chose (``runtimes/selftest.py``).

Images come from the held-out data (synthesized patterns without it), texts from its class prompts or
captions; of a small candidate pool, the probes most unlike each other are kept, so a graph that gives
every input the same embedding is far from most references. Writing needs numpy only; making the
probes needs the student (torch), imported inside the functions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vledge.errors import ConfigError
from vledge.images import PreprocessSpec, open_image, preprocess, resize_and_crop

log = logging.getLogger(__name__)

PROBES_PER_TOWER = 4
CANDIDATES = 32  # the pool the probes are picked from
FOLDER = "probes"
FILES = {
    "image": ("probes/images.npy", "probes/image_embeddings.npy"),
    "text": ("probes/texts.json", "probes/text_embeddings.npy"),
}
SYNTHETIC_TEXTS = ("a photo of a dog.", "a red car on a street.", "two people sitting at a table.",
                   "a close-up photo of a flower.", "a black and white photo of a building.", "a bowl of fruit.",
                   "a person riding a bicycle.", "a cat sleeping on a sofa.")


@dataclass
class Probes:
    """Probe inputs and their L2-normalised float32 reference embeddings, per tower.

    ``images``: uint8 (n, H, W, 3) at the image tower's input size; ``texts``: n strings.
    ``notes``: per tower, anything else the manifest records (where the probes came from, what the
    bundle gave on them where it was made, a lower ``min_cosine`` for its self-test).
    """

    images: np.ndarray | None = None
    image_embeddings: np.ndarray | None = None
    texts: list[str] | None = None
    text_embeddings: np.ndarray | None = None
    notes: dict[str, dict] = field(default_factory=dict)

    def inputs(self, kind: str):
        return self.images if kind == "image" else self.texts

    def reference(self, kind: str) -> np.ndarray | None:
        return self.image_embeddings if kind == "image" else self.text_embeddings

    @property
    def kinds(self) -> list[str]:
        return [k for k in ("image", "text") if self.inputs(k) is not None and self.reference(k) is not None]


def most_distinct(embeddings: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` rows picked greedily to be as unlike each other as they can (farthest point,
    starting from the row least like the mean); deterministic."""
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    mean = e.mean(axis=0)
    chosen = [int(np.argmin(e @ mean))]
    while len(chosen) < min(n, len(e)):
        closest = (e @ e[chosen].T).max(axis=1)  # each row's cosine to its nearest chosen row
        closest[chosen] = np.inf
        chosen.append(int(np.argmin(closest)))
    return chosen


def synthetic_images(size: int, n: int = 8) -> np.ndarray:
    """Deterministic RGB patterns (gradients, checks, a disc, stripes, rings, seeded noise) at ``size``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    r = np.hypot(x - 0.5, y - 0.5)
    disc = (r < 0.3).astype(np.float32)
    checks = (np.floor(x * 4) + np.floor(y * 4)) % 2
    patterns = [
        (x, y, 1 - x),  # a colour gradient
        (checks, checks, checks),  # a checkerboard
        (disc, disc * 0.2, 1 - disc),  # a disc on a background
        ((x + y) * 4 % 1, 0.5 + 0 * x, (x - y) % 1),  # diagonal stripes
        (np.sin(r * 20) * 0.5 + 0.5,) * 3,  # rings
        (y, 0 * y, 1 - y),  # a vertical gradient
    ]
    images = [np.stack(p, axis=-1) for p in patterns]
    rng = np.random.default_rng(0)
    images += [rng.random((size, size, 3), dtype=np.float32) for _ in range(max(0, n - len(images)))]
    return (np.clip(np.stack(images[:n]), 0, 1) * 255).round().astype(np.uint8)


def _candidate_images(data, spec: PreprocessSpec) -> tuple[np.ndarray, str]:
    if data is None or len(data) == 0:
        return synthetic_images(spec.image_size), "synthetic"
    count = min(len(data), CANDIDATES)
    picked = np.linspace(0, len(data) - 1, count).round().astype(int)
    images = []
    for i in dict.fromkeys(int(i) for i in picked):
        try:
            images.append(resize_and_crop(open_image(data.image(i)), spec))
        except Exception as exc:  # an undecodable item is no probe; the others will do
            log.debug("probe candidate %d skipped: %s", i, exc)
    if len(images) < 2:
        return synthetic_images(spec.image_size), "synthetic"
    return np.stack(images), "held-out"


def _candidate_texts(data) -> tuple[list[str], str]:
    texts = []
    if data is not None and data.classes:
        texts += [data.templates[0].format(c) for c in data.classes]
    if data is not None and data.has_captions:
        step = max(1, len(data) // CANDIDATES)
        texts += [data.caption(i) for i in range(0, len(data), step)][:CANDIDATES]
    texts = list(dict.fromkeys(t for t in texts if t))
    return (texts, "held-out") if len(texts) >= 2 else (list(SYNTHETIC_TEXTS), "synthetic")


def make_probes(student, held_out=None, n: int = PROBES_PER_TOWER, *, images=None, texts=None) -> Probes:
    """Probe inputs for both towers of ``student`` (a DualEncoder) and its FP32 embeddings of them.

    Candidates come from ``held_out`` (an ImageTextDataset), else synthesized; ``images`` / ``texts``
    give the candidates directly instead.
    """
    import torch

    spec = student.preprocess
    if images is not None:
        images, image_source = np.stack([resize_and_crop(open_image(im), spec) for im in images]), "given"
    else:
        images, image_source = _candidate_images(held_out, spec)
    texts, text_source = (list(texts), "given") if texts is not None else _candidate_texts(held_out)
    training = student.training
    student.eval()  # no dropout in a reference
    try:
        with torch.no_grad():
            image_emb = student.encode_image(torch.from_numpy(preprocess(list(images), spec))).float().cpu().numpy()
        text_emb = student.embed_texts(texts)
    finally:
        student.train(training)
    keep_i, keep_t = most_distinct(image_emb, n), most_distinct(text_emb, n)
    return Probes(
        images=images[keep_i], image_embeddings=image_emb[keep_i].astype(np.float32),
        texts=[texts[i] for i in keep_t], text_embeddings=text_emb[keep_t].astype(np.float32),
        notes={"image": {"source": image_source}, "text": {"source": text_source}},
    )


def write_probes(folder: Path, probes: Probes, embed_dim: int, towers=("image", "text")) -> dict | None:
    """Write the probes of ``towers`` into a bundle folder being built; returns the manifest's ``probes`` entry."""
    entry = {}
    kinds = [k for k in probes.kinds if k in towers]
    if not kinds:
        return None
    (folder / FOLDER).mkdir(exist_ok=True)
    for kind in kinds:
        inputs, reference = probes.inputs(kind), np.asarray(probes.reference(kind), dtype=np.float32)
        if reference.ndim != 2 or reference.shape != (len(inputs), embed_dim) or not np.isfinite(reference).all():
            raise ConfigError(f"{kind} probe embeddings must be finite, of shape ({len(inputs)}, {embed_dim}); "
                              f"got {reference.shape}")
        if not np.allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-3):
            raise ConfigError(f"{kind} probe embeddings must be L2-normalised (each row of norm 1)")
        inputs_file, embeddings_file = FILES[kind]
        if kind == "image":
            images = np.asarray(inputs)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ConfigError(f"probe images must be uint8 (n, H, W, 3), got {images.dtype} {images.shape}")
            np.save(folder / inputs_file, images, allow_pickle=False)
        else:
            if not all(isinstance(t, str) for t in inputs):
                raise ConfigError("probe texts must be strings")
            (folder / inputs_file).write_text(json.dumps(list(inputs), indent=1, ensure_ascii=False) + "\n")
        np.save(folder / embeddings_file, reference, allow_pickle=False)
        entry[kind] = {"inputs": inputs_file, "embeddings": embeddings_file, "count": len(inputs),
                       "reference": "fp32 student", **probes.notes.get(kind, {})}
    return entry


COSINE_MARGIN = 0.02  # below what the bundle gave where it was made, for a tower whose probes sit under MIN_COSINE
COSINE_FLOOR = 0.5  # never lower than this: under it a cosine cannot tell a tower from garbage


def bundle_probes(student, held_out, edge=None) -> Probes:
    """The probes a compressed bundle records, checked on ``edge`` (the verified bundle, loaded): what it
    gave is kept per tower as ``at_compress``, and a tower whose probes fall under the self-test's
    cosine tolerance gets a lower ``min_cosine`` of its own, with a warning."""
    from vledge.runtimes.selftest import MIN_COSINE, TowerProbes, check_tower

    probes = make_probes(student, held_out)
    if edge is None:
        return probes
    placement = edge.info()["placement"]
    for kind in probes.kinds:
        if kind not in edge.manifest.towers:
            continue
        check = check_tower(edge, kind, TowerProbes(probes.inputs(kind), probes.reference(kind), MIN_COSINE), placement)
        note = probes.notes.setdefault(kind, {})
        note["at_compress"] = {"placement": placement, "min_cosine": check.min_cosine, "spread_ratio": check.spread_ratio}
        if check.passed:
            continue
        if check.min_cosine is not None and check.min_cosine < MIN_COSINE:
            note["min_cosine"] = max(COSINE_FLOOR, np.floor((check.min_cosine - COSINE_MARGIN) * 100) / 100)
        log.warning("the %s tower's probes on %s: %s; its self-test on load will allow a cosine of %s",
                    kind, placement, check.reason, note.get("min_cosine", MIN_COSINE))
    return probes
