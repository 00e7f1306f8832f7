"""`vledge annotate`: top labels per image into CSV or JSON lines, a review bucket, bad images listed, never fatal."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

import vledge
from bundles import LABEL_NAMES, build_bundle
from videos import fashion_images
from vledge.annotate import annotate
from vledge.cli import main
from vledge.errors import ConfigError

LABELS = ["a t-shirt", "a trouser", "a bag"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return vledge.load(build_bundle(tmp_path_factory.mktemp("annotate") / "bundle"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i, pixels in enumerate(fashion_images(range(6))):
        Image.fromarray(pixels).save(root / f"fm{i}.png")
    (root / "sub").mkdir()
    big = np.kron(fashion_images([7])[0], np.ones((40, 30, 1), np.uint8))  # a 1120 x 840 "photo"
    Image.fromarray(big).save(root / "sub" / "photo.jpg", quality=90)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, and not looked at")
    return root


def test_every_image_is_labelled_as_the_library_would_and_bad_ones_are_listed(model, folder):
    rows = {a.path: a for a in annotate(model, folder, LABELS, top_k=2, review_below=0.0, review_margin=0.0)}
    assert sorted(rows) == ["broken.jpg", "empty.png"] + [f"fm{i}.png" for i in range(6)] + ["sub/photo.jpg"]
    assert "cannot decode image" in rows["broken.jpg"].error and "0 bytes" in rows["empty.png"].error
    for name in ("fm3.png", "sub/photo.jpg"):
        assert rows[name].top == model.classify(folder / name, LABELS, top_k=2).top
        assert not rows[name].review


def test_the_review_bucket_holds_low_scores_and_small_margins(model, folder):
    everything = [a for a in annotate(model, folder, LABELS, review_below=0.0, review_margin=0.0) if not a.error]
    best = sorted(a.top[0][1] for a in everything)
    margins = sorted(a.margin for a in everything)
    cut, gap = (best[2] + best[3]) / 2, (margins[2] + margins[3]) / 2
    by_score = [a for a in annotate(model, folder, LABELS, review_below=cut, review_margin=0.0) if a.review]
    assert len(by_score) == 3 and {a.reason for a in by_score} == {"score"}
    by_margin = [a for a in annotate(model, folder, LABELS, review_below=0.0, review_margin=gap) if a.review]
    assert len(by_margin) == 3 and {a.reason for a in by_margin} == {"margin"}


def test_csv_and_json_lines_by_suffix(model, folder, tmp_path, capsys):
    out_csv, out_jsonl = tmp_path / "labels.csv", tmp_path / "labels.jsonl"
    assert main(["annotate", model.info()["path"], str(folder), "--labels", ",".join(LABELS), "--out", str(out_csv),
                 "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert "9 images" in printed and "2 that would not decode" in printed and "bad image: broken.jpg" in printed
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ["path", "status", "label_1", "score_1", "label_2", "score_2", "margin", "reason", "error"]
    assert {r["path"]: r["status"] for r in rows}["empty.png"] == "error"
    assert main(["annotate", model.info()["path"], str(folder), "--out", str(out_jsonl), "--no-recursive"]) == 0
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert len(lines) == 8 and {e["label"] for x in lines for e in x["labels"]} <= set(LABEL_NAMES)
    assert not list(tmp_path.glob(".*tmp*"))


def test_one_label_and_an_unwritable_out_are_refused_before_any_work(model, folder, tmp_path, capsys):
    with pytest.raises(ConfigError, match="at least two labels"):
        list(annotate(model, folder, ["a bag"]))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["annotate", model.info()["path"], str(folder), "--out", str(blocker / "out.csv")]) == 2
    assert "--out" in capsys.readouterr().err
