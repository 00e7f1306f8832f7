"""How the default ``clip-shrink-half`` student distils from a transformers-made CLIP teacher under recipe
variants (learning rate, warm-up, temperature, loss weights, frozen embeddings, inheritance on or off), and how
good it is right after weight inheritance. Knobs at the top; run from the repository root:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/clip_distill_recipe.py [--quick] [--teacher p4] [--full-length]
        [--variants NAME ...]
(a) builds a CLIPModel teacher folder with save_pretrained (benchmarks/clip_teacher.py), trains it on
    Fashion-MNIST and caches it under ~/.cache/vledge/clip-recipe/;
(b) builds the default student with ``build_student``, scores it right after inheritance against the other
    layer choices and against depth-only and width-only shrinking, then distils it with ``distill`` under each
    variant: held-out agreement per epoch, then zero-shot top-1 and agreement with the teacher on test images.
Short runs distil a pool of DISTILL_IMAGES for EPOCHS epochs; ``--full-length`` keeps DistillConfig's own
epochs, images and early stopping. Results go to benchmarks/results/clip_distill_recipe.json under the
teacher's name (" quick" appended for --quick). The teacher's outputs are computed once and served to every
variant through ``distill``'s ``teacher_forward`` (distillation applies no pixel augmentation).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from clip_teacher import train_teacher, write_untrained_folder  # noqa: E402

from vledge.compress.distil import DistillConfig, distill, split_indices  # noqa: E402
from vledge.compress.students import StudentSpec, build_student, default_student, get_student  # noqa: E402
from vledge.compress.students.inherit import inherit_tower_  # noqa: E402
from vledge.cpu import host_cpu  # noqa: E402
from vledge.data import load_dataset  # noqa: E402
from vledge.data.base import Subset  # noqa: E402
from vledge.models import load_teacher  # noqa: E402

CACHE = Path.home() / ".cache/vledge/clip-recipe"
# name -> (CLIPModel shape, its training). "p8": 8 px patches (a 4 x 4 grid); "p4": 4 px patches (8 x 8), trained
# less, so a weaker teacher.
TEACHERS = {
    "p8": ({"width": 128, "layers": 4, "heads": 4, "patch": 8, "image_size": 32, "embed_dim": 64, "seed": 0},
           {"images": 20000, "epochs": 3, "batch_size": 128, "lr": 1e-3, "contrastive_weight": 0.1, "seed": 0}),
    "p4": ({"width": 128, "layers": 4, "heads": 4, "patch": 4, "image_size": 32, "embed_dim": 64, "seed": 0},
           {"images": 10000, "epochs": 2, "batch_size": 128, "lr": 1e-3, "contrastive_weight": 0.5, "seed": 0}),
}
DISTILL_IMAGES = 6000  # the pool distill splits into training and held-out images
EPOCHS = 3
VAL_FRACTION = 0.1
TEST_IMAGES = 2000  # zero-shot top-1 and teacher agreement on the test split
THREADS = 1
OUT = Path("benchmarks/results/clip_distill_recipe.json")
OLD = {}  # DistillConfig's defaults, as the run used them
# name -> (DistillConfig fields over the old recipe, what is done to the student before distill)
VARIANTS = {
    "old": (OLD, ""),
    "lr 1e-3": ({"lr": 1e-3}, ""),
    "lr 3e-4": ({"lr": 3e-4}, ""),
    "lr 1e-4": ({"lr": 1e-4}, ""),
    "lr 3e-4, warm-up 0.3": ({"lr": 3e-4, "warmup_fraction": 0.3}, ""),
    "old, temperature = 1/teacher scale": ({"temperature": "teacher"}, ""),
    "old, mimic only": ({"affinity_weight": 0.0}, ""),
    "old, affinity only": ({"mimic_weight": 0.0}, ""),
    "old, embeddings frozen": (OLD, "freeze_embeddings"),
    "lr 3e-4, temperature = 1/teacher scale": ({"lr": 3e-4, "temperature": "teacher"}, ""),
    "lr 3e-4, embeddings frozen": ({"lr": 3e-4}, "freeze_embeddings"),
    "lr 3e-4, no inheritance": ({"lr": 3e-4}, "no_inheritance"),
    "lr 1e-3, embeddings frozen": ({"lr": 1e-3}, "freeze_embeddings"),
    "lr 1e-3, no inheritance": ({"lr": 1e-3}, "no_inheritance"),
    "old, seed 1": ({"seed": 1}, ""),
    "lr 1e-3, seed 1": ({"lr": 1e-3, "seed": 1}, ""),
    "old, embeddings frozen, seed 1": ({"seed": 1}, "freeze_embeddings"),
    "old, image embeddings frozen": (OLD, "freeze_image_embeddings"),
    "old, text embeddings frozen": (OLD, "freeze_text_embeddings"),
    "old, embeddings frozen, no inheritance": (OLD, "freeze_embeddings_no_inheritance"),
    "old, no inheritance": (OLD, "no_inheritance"),
}
QUICK = {"DISTILL_IMAGES": 1200, "EPOCHS": 2, "TEST_IMAGES": 500, "VARIANTS": ("old", "lr 3e-4")}


def teacher_dir(name: str) -> Path:
    shape = TEACHERS[name][0]
    return CACHE / f"teacher-w{shape['width']}-l{shape['layers']}-p{shape['patch']}"


def ensure_teacher(name: str, train_data) -> dict:
    """The cached teacher folder, built and trained on first use; what its training did."""
    shape, training = TEACHERS[name]
    folder = teacher_dir(name)
    record = folder / "vledge-recipe-teacher.json"
    if record.is_file():
        return json.loads(record.read_text())
    write_untrained_folder(folder, train_data, **shape)
    info = {"shape": shape, **train_teacher(folder, train_data, **training)}
    record.write_text(json.dumps(info, indent=2))
    return info


class PrecomputedTeacher:
    """``distill``'s ``teacher_forward``: the teacher's normalised embeddings of every image of the pool, computed
    once for all variants, and of each text the first time it is asked for."""

    def __init__(self, teacher, data, batch_size: int = 256):
        self.teacher, self.texts = teacher, {}
        rows = []
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                batch = data.batch(range(start, min(len(data), start + batch_size)), teacher.preprocess)
                rows.append(teacher.encode_image(torch.from_numpy(batch.pixels)))
        self.images = torch.cat(rows)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self.texts]
        if new:
            with torch.no_grad():
                self.texts.update(zip(new, self.teacher.encode_text(*self.teacher.tokenize(new))))
        return torch.stack([self.texts[t] for t in texts])

    def __call__(self, batch, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[torch.from_numpy(batch.indices)], self.encode_texts(texts)


class TestSplit:
    """Zero-shot top-1 on the test images, and top-1 agreement with the teacher's predictions."""

    def __init__(self, teacher, data):
        self.data = data
        self.labels = np.array([data.label(i) for i in range(len(data))])
        self.teacher_predictions = self.predictions(teacher)
        self.teacher_top1 = float((self.teacher_predictions == self.labels).mean())

    @torch.no_grad()
    def predictions(self, model) -> np.ndarray:
        model.eval()
        prompts = [t.format(c) for c in self.data.classes for t in self.data.templates]
        text = model.encode_text(*model.tokenize(prompts)).view(len(self.data.classes), len(self.data.templates), -1)
        classes = torch.nn.functional.normalize(text.mean(1), dim=-1)
        out = []
        for start in range(0, len(self.data), 256):
            batch = self.data.batch(range(start, min(len(self.data), start + 256)), model.preprocess)
            out.append((model.encode_image(torch.from_numpy(batch.pixels)) @ classes.t()).argmax(1).numpy())
        return np.concatenate(out)

    def score(self, model) -> dict:
        predicted = self.predictions(model)
        # A collapsed student predicts one class for nearly every image: its agreement is that class's share.
        return {"top1": round(float((predicted == self.labels).mean()), 4),
                "agreement": round(float((predicted == self.teacher_predictions).mean()), 4),
                "most_predicted_share": round(float(np.bincount(predicted).max() / len(predicted)), 4)}


def _encoder_layers(tower):
    backbone = getattr(tower, "backbone", None)
    return (backbone.vision_model if backbone is not None else tower.encoder.text_model).encoder


def _teacher_view(teacher, layers: list[int]):
    """A copy of the teacher holding only ``layers`` of each tower, in order, so that inheriting from it (which
    keeps all of a teacher with as many layers as the student) inherits exactly those teacher layers."""
    view = copy.deepcopy(teacher)
    for tower in (view.image_tower, view.text_tower):
        encoder = _encoder_layers(tower)
        encoder.layers = torch.nn.ModuleList([encoder.layers[i] for i in layers])
    return view


def inheritance_study(teacher, test: TestSplit, spec_name: str) -> dict:
    """The student right after inheritance: the default's layer choice against the others, and which of
    depth and width costs the agreement."""
    spec = get_student(spec_name)
    student = build_student(spec, teacher)
    rows = {f"default {student.source['inherited']['image']['layers']}": test.score(student)}
    n_teacher = len(_encoder_layers(teacher.image_tower).layers)
    n_student = len(_encoder_layers(student.image_tower).layers)
    for layers in _subsets(n_teacher, n_student):
        view = _teacher_view(teacher, layers)
        inherit_tower_(student.image_tower, view.image_tower)
        inherit_tower_(student.text_tower, view.text_tower)
        rows[f"layers {layers}"] = test.score(student)
    for depth, width in ((1.0, 1.0), (0.5, 1.0), (1.0, 0.5)):
        shrink = {"shrink": {"depth": depth, "width": width}}
        custom = StudentSpec(f"shrink d{depth} w{width}", "study", image_tower=shrink, text_tower=shrink)
        rows[f"depth {depth}, width {width}"] = test.score(build_student(custom, teacher))
    return rows


def _subsets(n: int, k: int) -> list[list[int]]:
    from itertools import combinations

    return [list(c) for c in combinations(range(n), k)]


# What a student preparation freezes: parameter names starting with a prefix and holding "embedding"
# (the patch, class and position embeddings of the image tower; the token and position tables of the text one).
FREEZE = {"freeze_embeddings": ("image_tower.", "text_tower."), "freeze_image_embeddings": ("image_tower.",),
          "freeze_text_embeddings": ("text_tower.",)}


def _freeze(student, towers: tuple[str, ...]) -> None:
    """These towers' embeddings keep their inherited values."""
    for name, param in student.named_parameters():
        if "embedding" in name and name.startswith(towers):
            param.requires_grad_(False)


def run_variant(name, fields, prepare, teacher, pool, teacher_forward, test: TestSplit, spec_name: str,
                base: dict) -> dict:
    fields = dict(fields)
    if fields.get("temperature") == "teacher":
        fields["temperature"] = round(1 / float(teacher.logit_scale.detach().exp()), 5)
    config = DistillConfig(**{**base, **fields})
    spec = get_student(spec_name)
    if prepare.endswith("no_inheritance"):
        spec = StudentSpec(**{**spec.to_dict(), "inherit": False})
    student = build_student(spec, teacher)
    frozen = FREEZE.get(prepare.removesuffix("_no_inheritance"))
    if frozen:
        _freeze(student, frozen)
    report = distill(student, teacher, pool, config, teacher_forward=teacher_forward)
    for param in student.parameters():
        param.requires_grad_(True)
    row = {
        "fields": fields, "student_prep": prepare,
        "val_agreement": [round(report.initial["val_agreement"], 4)] + [round(h["val_agreement"], 4) for h in report.history],
        "val_loss": [round(report.initial["val_loss"], 4)] + [round(h["val_loss"], 4) for h in report.history],
        "best_epoch": report.best_epoch, "seconds": round(report.seconds, 1),
        "test_after": test.score(student),
    }
    print(f"{name:38s} agreement {row['val_agreement']} test {row['test_after']} ({row['seconds']} s)", flush=True)
    return row


def main() -> None:
    global DISTILL_IMAGES, EPOCHS, TEST_IMAGES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and epochs, two variants")
    parser.add_argument("--variants", nargs="*", default=None, help="run only these variants (names as in VARIANTS)")
    parser.add_argument("--teacher", default="p8", choices=list(TEACHERS), help="which teacher of TEACHERS")
    parser.add_argument("--full-length", action="store_true",
                        help="DistillConfig's own epochs, images and early stopping on the whole training split")
    args = parser.parse_args()
    names = list(VARIANTS)
    if args.quick:
        DISTILL_IMAGES, EPOCHS, TEST_IMAGES, names = QUICK["DISTILL_IMAGES"], QUICK["EPOCHS"], QUICK["TEST_IMAGES"], list(QUICK["VARIANTS"])
    names = args.variants or names
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    train_data, test_data = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", split="test")
    teacher_info = ensure_teacher(args.teacher, train_data)
    teacher = load_teacher(teacher_dir(args.teacher))
    spec_name = default_student(teacher)
    test = TestSplit(teacher, Subset(test_data, range(TEST_IMAGES)))
    print(f"teacher zero-shot top-1 {test.teacher_top1:.4f} on {TEST_IMAGES} test images; student {spec_name}", flush=True)
    inheritance = inheritance_study(teacher, test, spec_name)
    for name, row in inheritance.items():
        print(f"inherited, {name:30s} {row}", flush=True)
    if args.full_length:
        base, prefix = {}, "full length: "
        pool = Subset(train_data, np.sort(np.concatenate(split_indices(len(train_data), DistillConfig()))))
    else:
        base, prefix = {"epochs": EPOCHS, "max_samples": None, "val_fraction": VAL_FRACTION, "patience": None}, ""
        pool = Subset(train_data, np.sort(np.random.default_rng(1).permutation(len(train_data))[:DISTILL_IMAGES]))
    teacher_forward = PrecomputedTeacher(teacher, pool)
    variants = {prefix + name: run_variant(prefix + name, *VARIANTS[name], teacher, pool, teacher_forward, test, spec_name, base)
                for name in names}
    result = {
        "what": "clip-shrink-half distilled from a transformers-made CLIP teacher under recipe variants",
        "cpu": host_cpu().to_dict(), "python": platform.python_version(), "torch": torch.__version__,
        "threads": THREADS, "load_average_at_end": list(os.getloadavg()),
        "machine_note": "2 cores shared with 7 other helpers' work (tests, builds) during the run",
        "teacher": {"name": args.teacher, "folder": str(teacher_dir(args.teacher)), "training": teacher_info, "test_top1": round(test.teacher_top1, 4),
                    "logit_scale": round(float(teacher.logit_scale.detach().exp()), 2), "test_images": TEST_IMAGES},
        "distill_data": _distill_data(len(train_data)),
        "student": spec_name, "inherited": inheritance, "variants": variants,
        "seconds": round(time.perf_counter() - started, 1), "quick": args.quick,
    }
    _record(args.teacher + (" quick" if args.quick else ""), result)
    print(json.dumps({k: result[k] for k in ("teacher", "seconds")}, indent=2))


def _distill_data(n_train: int) -> dict:
    """The images and epochs behind each kind of variant (full-length ones are named so)."""
    short = DistillConfig(max_samples=None, val_fraction=VAL_FRACTION)
    train, held = split_indices(DISTILL_IMAGES, short)
    full_train, full_held = split_indices(n_train, DistillConfig())
    return {"short": {"pool": DISTILL_IMAGES, "train": len(train), "held_out": len(held), "epochs": EPOCHS},
            "full length": {"train": len(full_train), "held_out": len(full_held), "epochs": DistillConfig().epochs,
                            "max_samples": DistillConfig().max_samples, "patience": DistillConfig().patience},
            "batch_size": DistillConfig().batch_size}


def _record(teacher: str, result: dict) -> None:
    """Into OUT under the teacher's name; variants already recorded for that teacher and not rerun are kept, and
    whatever else OUT holds (the compress_cli runs, recorded by hand from `vledge compress --report`)."""
    recorded = json.loads(OUT.read_text()) if OUT.is_file() else {}
    runs = recorded.setdefault("runs", {})
    earlier = runs.get(teacher, {}).get("variants", {})
    result["variants"] = {**earlier, **result["variants"]}
    runs[teacher] = result
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(recorded, indent=2) + "\n")


if __name__ == "__main__":
    main()
