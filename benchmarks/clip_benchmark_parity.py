"""`vledge eval` against LAION's CLIP_benchmark 1.6 on the same bundle, images, classes and templates.

Zero-shot classification on the first N_IMAGES of Fashion-MNIST's test split (acc1, acc5, mean per-class
recall), and retrieval on a captions file of RETRIEVAL_IMAGES of them whose captions repeat (every
caption is one of 10 class names x 4 templates = 40 texts). The vledge side is the CLI (`vledge eval
--json`); the CLIP_benchmark side is its own `zeroshot_classification.evaluate` and
`zeroshot_retrieval.evaluate`, given the bundle as a CLIP-like model (encode_image on vledge's
preprocessed pixels, encode_text on vledge's token ids through `EdgeModel.encode_text(input_ids=...)`).

The bundle is the tests' tiny seeded model (no demo teacher was at hand), first trained for TRAIN_STEPS
steps on Fashion-MNIST's training split so that its scores mean something. CLIP_benchmark's `accuracy()`
calls `float()` on a one-element array, which NumPy 2.4 refuses (TypeError); it is replaced by a copy that
differs only in calling `.item()`.

Repeated captions tie exactly in image -> text retrieval. vledge ranks ordinally: candidates by score, exact
ties in file order, earlier first (a stable sort's order). CLIP_benchmark keeps whichever candidates
`torch.topk` returns. On CPU, with at least 64 * k candidates a row, torch selects by `std::partial_sort`,
a heap that admits a later candidate only if it scores strictly higher than the heap's worst: where the
row's best score is held by at least k candidates (here 40 captions of about 25 copies each, k <= 10) it
keeps the earliest k of them, as a stable sort does; otherwise a later, higher candidate can push out any of
those tied at the heap's bottom. With fewer than 64 * k candidates it uses `std::nth_element`, whose pick
among ties follows no such rule. `topk_against_stable_sort` counts, on CLIP_benchmark's own embeddings, the
queries whose hit at k differs between `torch.topk` and a stable sort.

Run: .venv/bin/python benchmarks/clip_benchmark_parity.py   (needs `.venv/bin/python -m pip install --no-deps
clip-benchmark==1.6.2`)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny seeded model the tests build bundles from

N_IMAGES = 2000
RETRIEVAL_IMAGES = 1000
FEW_CLASSES, FEW_IMAGES = 4, 400
BATCH = 250
TEMPLATES = ["a photo of a {c}.", "a blurry photo of a {c}.", "a black and white photo of the {c}.",
             "a low resolution photo of a {c}."]
TOLERANCE = 1e-3
TRAIN_STEPS = 300
RESULT = ROOT / "benchmarks" / "results" / "clip_benchmark_parity.json"
TRAIN_BATCH = 128


def accuracy(output, target, topk=(1,)):
    """CLIP_benchmark 1.6.2's ``zeroshot_classification.accuracy``, with ``.item()`` for NumPy 2.4."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [float(correct[:k].reshape(-1).float().sum(0, keepdim=True).cpu().numpy().item()) / n for k in topk]


class BundleAsClip(torch.nn.Module):
    """A vledge bundle behind the two methods CLIP_benchmark calls."""

    def __init__(self, edge):
        super().__init__()
        self.edge = edge

    def encode_image(self, pixels):
        return torch.from_numpy(self.edge.encode_pixels(pixels.numpy()))

    def encode_text(self, tokens):
        ids, mask = tokens[:, 0].numpy(), tokens[:, 1].numpy()
        return torch.from_numpy(self.edge.encode_text(input_ids=ids, attention_mask=mask))


def tokenizer_for(edge):
    def tokenize(texts):
        ids, mask = edge.tokenizer(list(texts))
        return torch.from_numpy(np.stack([ids, mask], axis=1))
    return tokenize


class Loader:
    """Batches as a DataLoader yields them, with ``dataset.classes`` as CLIP_benchmark reads it."""

    def __init__(self, batches, classes=None):
        self.batches, self.dataset = batches, SimpleNamespace(classes=classes)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def train_briefly(model, steps: int) -> None:
    """Zero-shot cross-entropy of images against their class prompts, in place (the model stays cached)."""
    import torch.nn.functional as F

    from vledge.data import load_dataset
    from vledge.images import preprocess_uint8_batch

    data = load_dataset("fashion-mnist", "train")
    ids, mask = model.tokenize([t.format(c=c) for c in data.classes for t in TEMPLATES])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        pick = rng.choice(len(data.labels), TRAIN_BATCH, replace=False)
        images = model.encode_image(torch.from_numpy(preprocess_uint8_batch(data.pixels[pick], model.preprocess)))
        classes = F.normalize(model.encode_text(ids, mask).view(len(data.classes), len(TEMPLATES), -1).mean(1), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * images @ classes.T, torch.from_numpy(data.labels[pick]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def topk_against_stable_sort(model, tokenize, batches, ks) -> dict:
    """For each direction and k, the queries whose pair is among ``torch.topk``'s k (CLIP_benchmark's pick,
    in its rows of BATCH queries) but not among a stable sort's first k (vledge's ordinal ranking), or the
    reverse, on the embeddings CLIP_benchmark computes: 0 means the two agree query by query."""
    import torch.nn.functional as F

    images = F.normalize(torch.cat([model.encode_image(pixels) for pixels, _ in batches]), dim=-1)
    texts = F.normalize(torch.cat([model.encode_text(tokenize([c for (c,) in group])) for _, group in batches]), dim=-1)
    out = {}
    for key, scores in (("image", texts @ images.T), ("text", (texts @ images.T).T)):
        pair = torch.arange(len(scores))[:, None]
        stable = torch.from_numpy(np.argsort(-scores.numpy(), axis=1, kind="stable"))
        for k in ks:
            picked = torch.cat([torch.topk(scores[s:s + BATCH], k, dim=1)[1] for s in range(0, len(scores), BATCH)])
            differ = (picked == pair).any(1) != (stable[:, :k] == pair).any(1)
            out[f"{key}_retrieval_recall@{k}"] = int(differ.sum())
    return out


def vledge_eval(bundle: Path, data: str, work: Path, *extra: str) -> dict:
    from vledge.cli import main

    out = work / f"eval-{len(list(work.glob('eval-*')))}.json"
    code = main(["-q", "eval", str(bundle), "--data", data, "--json", str(out), *extra])
    if code != 0:
        raise SystemExit(f"vledge eval exited {code}")
    return json.loads(out.read_text())


def classification(bundle: Path, edge, work: Path) -> dict:
    from clip_benchmark.metrics import zeroshot_classification as zsc

    from vledge.data import load_dataset

    record = vledge_eval(bundle, "fashion-mnist", work, "--max-samples", str(N_IMAGES), "--batch-size", str(BATCH),
                         *[arg for t in TEMPLATES for arg in ("--templates", t)])
    data = load_dataset("fashion-mnist", "test")
    batches = []
    for start in range(0, N_IMAGES, BATCH):
        batch = data.batch(range(start, start + BATCH), edge.manifest.preprocess)
        batches.append((torch.from_numpy(batch.pixels), torch.from_numpy(batch.labels)))
    zsc.accuracy = accuracy
    theirs = zsc.evaluate(BundleAsClip(edge), Loader(batches, data.classes), tokenizer_for(edge), data.classes,
                          TEMPLATES, "cpu", amp=False)
    return {"ours": record["metrics"], "theirs": theirs, "prompts": record["prompts"]}


def few_classes(bundle: Path, edge, work: Path) -> dict:
    """An image folder of FEW_CLASSES classes (folders named by number, their names given by --classes):
    top-5 does not apply, which CLIP_benchmark reports as NaN and vledge as null with a reason."""
    from clip_benchmark.metrics import zeroshot_classification as zsc

    from vledge.data import load_dataset

    data = load_dataset("fashion-mnist", "test")
    folder = work / "few"
    picked = [i for i in range(len(data.labels)) if data.labels[i] < FEW_CLASSES][:FEW_IMAGES]
    for i in picked:
        (folder / f"c{data.labels[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.image(i)).save(folder / f"c{data.labels[i]}" / f"{i}.png")
    names = {f"c{c}": data.classes[c] for c in range(FEW_CLASSES)}
    (work / "names.json").write_text(json.dumps(names))
    record = vledge_eval(bundle, str(folder), work, "--classes", str(work / "names.json"),
                         *[arg for t in TEMPLATES for arg in ("--templates", t)])
    images = load_dataset(str(folder))
    batch = images.batch(range(len(images)), edge.manifest.preprocess)
    classes = [names[c] for c in images.classes]
    zsc.accuracy = accuracy
    theirs = zsc.evaluate(BundleAsClip(edge), Loader([(torch.from_numpy(batch.pixels), torch.from_numpy(batch.labels))],
                          classes), tokenizer_for(edge), classes, TEMPLATES, "cpu", amp=False)
    return {"ours": record["metrics"], "theirs": theirs, "not_applicable": record["not_applicable"]}


def retrieval(bundle: Path, edge, work: Path) -> dict:
    from clip_benchmark.metrics import zeroshot_retrieval as zsr

    from vledge.data import load_dataset

    data = load_dataset("fashion-mnist", "test")
    folder = work / "captions"
    folder.mkdir()
    rows = ["path,caption"]
    for i in range(RETRIEVAL_IMAGES):
        Image.fromarray(data.image(i)).save(folder / f"{i}.png")
        template = TEMPLATES[(i * 7) % len(TEMPLATES)]
        rows.append(f"{i}.png,{template.format(c=data.classes[data.label(i)])}")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    record = vledge_eval(bundle, str(folder / "captions.csv"), work, "--recall-k", "1,5,10")
    captions = load_dataset(str(folder / "captions.csv"))
    batches = []
    for start in range(0, RETRIEVAL_IMAGES, BATCH):
        batch = captions.batch(range(start, start + BATCH), edge.manifest.preprocess)
        batches.append((torch.from_numpy(batch.pixels), [[c] for c in batch.captions]))
    theirs = zsr.evaluate(BundleAsClip(edge), Loader(batches), tokenizer_for(edge), "cpu", amp=False,
                          recall_k_list=[1, 5, 10])
    texts = [c for _, group in batches for (c,) in group]
    ranking = {"vledge": record["recall_ties"],
               "clip_benchmark": "torch.topk's k per query (CPU: std::partial_sort when 64 * k <= candidates, "
                                 "else std::nth_element)"}
    return {"ours": record["metrics"], "theirs": theirs, "distinct_captions": len(set(texts)), "ranking": ranking,
            "topk_vs_stable_sort": topk_against_stable_sort(BundleAsClip(edge), tokenizer_for(edge), batches,
                                                            (1, 5, 10))}


def compare(ours: dict, theirs: dict) -> list[str]:
    """One line per metric: the same within TOLERANCE (or both not applicable), or DIFFERENT."""
    lines = []
    for key, value in theirs.items():
        mine = ours.get(key)
        if value != value:  # NaN: CLIP_benchmark's "not applicable"
            verdict = "same" if mine is None else "DIFFERENT"
        else:
            verdict = "same" if mine is not None and abs(mine - value) <= TOLERANCE else "DIFFERENT"
        show = "None" if mine is None else f"{mine:.6f}"
        lines.append(f"  {key:<26} vledge {show:<9} CLIP_benchmark {value:<9.6f} {verdict}")
    return lines


def main() -> int:
    import vledge
    from bundles import build_bundle

    from bundles import tiny_model

    torch.set_num_threads(1)
    train_briefly(tiny_model(), TRAIN_STEPS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = build_bundle(work / "bundle")
        edge = vledge.load(bundle, device="cpu", threads=1)
        results = {"classification": classification(bundle, edge, work), "few_classes": few_classes(bundle, edge, work),
                   "retrieval": retrieval(bundle, edge, work)}
    lines = compare(results["classification"]["ours"], results["classification"]["theirs"])
    few = compare(results["few_classes"]["ours"], results["few_classes"]["theirs"])
    retrieval_lines = compare(results["retrieval"]["ours"], results["retrieval"]["theirs"])
    print(f"classification: Fashion-MNIST test, first {N_IMAGES} images, 10 classes, {len(TEMPLATES)} templates")
    print("\n".join(lines))
    print(f"classification: an image folder of {FEW_IMAGES} of those images in {FEW_CLASSES} classes, names from "
          f"--classes; vledge's reason for acc5: {results['few_classes']['not_applicable'].get('acc5')}")
    print("\n".join(few))
    print(f"retrieval: {RETRIEVAL_IMAGES} images, {results['retrieval']['distinct_captions']} distinct captions")
    print("\n".join(retrieval_lines))
    order = results["retrieval"]["topk_vs_stable_sort"]
    print(f"queries whose hit differs between torch.topk and a stable sort: {order}")
    every = lines + few + retrieval_lines
    different = sum("DIFFERENT" in line for line in every)
    print(f"{len(every) - different} of {len(every)} metrics agree within {TOLERANCE}; {different} differ "
          f"(repeated captions: {results['retrieval']['ranking']['vledge']})")
    RESULT.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
