"""`vledge eval` on a bundle: given classes and templates, CLIP_benchmark's keys in the JSON, splits refused."""

import json

import numpy as np
import pytest
from PIL import Image

from bundles import build_bundle
from vledge import __version__
from vledge.bundle_files import read_bundle
from vledge.cli import main
from vledge.errors import ConfigError, DataError
from vledge.eval_prompts import read_classes, read_templates

FOLDERS = ["boot", "shirt", "trouser"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("eval") / "bundle")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data") / "photos"
    rng = np.random.default_rng(0)
    for name in FOLDERS:
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_eval_records_metrics_prompts_split_and_model_hash(bundle, folder, tmp_path):
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"boot": "ankle boot", "shirt": "t-shirt", "trouser": "trouser"}))
    templates = tmp_path / "templates.txt"
    templates.write_text("# CLIP_benchmark spelling\na photo of a {c}.\n\na blurry photo of a {}.\n")
    out = tmp_path / "eval.json"
    code = main(["eval", str(bundle), "--data", str(folder), "--classes", str(names), "--templates", str(templates),
                 "--templates", "a {} on a table.", "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert 0 <= record["metrics"]["acc1"] <= 1 and record["metrics"]["acc5"] is None
    assert "only 3 classes" in record["not_applicable"]["acc5"]
    assert set(record["per_class_recall"]) == {"ankle boot", "t-shirt", "trouser"}
    per_class = list(record["per_class_recall"].values())
    assert record["metrics"]["mean_per_class_recall"] == pytest.approx(np.mean(per_class))
    assert record["prompts"] == {"classes": ["ankle boot", "t-shirt", "trouser"],
                                 "templates": ["a photo of a {}.", "a blurry photo of a {}.", "a {} on a table."]}
    assert record["split"] is None and record["images"] == 6
    assert record["model"]["sha256"] == read_bundle(bundle).manifest_sha256 and record["model"]["kind"] == "bundle"
    assert record["vledge_version"] == __version__


def test_retrieval_keys_follow_recall_k(bundle, tmp_path):
    rng = np.random.default_rng(1)
    rows = ["path,caption"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'a boot' if i % 2 else 'a shirt'}")  # two captions, three times each
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval.json"
    assert main(["eval", str(bundle), "--data", str(tmp_path / "captions.csv"), "--recall-k", "1,3",
                 "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert set(metrics) == {f"{side}_retrieval_recall@{k}" for side in ("image", "text") for k in (1, 3)}
    # An image's caption ties with its copies and ranks behind the earlier ones: only images 0 and 1 hold
    # their caption's first copy, so at most 2 of the 6 can find it first.
    assert metrics["text_retrieval_recall@1"] <= 2 / 6


def test_a_split_the_data_does_not_have_is_an_error(bundle, folder, capsys):
    assert main(["eval", str(bundle), "--data", str(folder), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert ("photos has no 'test' split: a captions file or a folder without train/ and test/ subfolders is one "
            "set") in err
    assert "Leave the split out to use all of it" in err
    assert main(["eval", str(bundle), "--data", "digits", "--split", "dev"]) == 2
    assert "digits split must be 'train' or 'test', got 'dev'" in capsys.readouterr().err


def test_bad_recall_k_and_templates_exit_2(bundle, folder, capsys):
    assert main(["eval", str(bundle), "--data", str(folder), "--recall-k", "1,five"]) == 2
    assert "--recall-k takes comma-separated whole numbers, e.g. 1,5,10; got '1,five'" in capsys.readouterr().err
    assert main(["eval", str(bundle), "--data", str(folder), "--templates", "no-hole.txt"]) == 2
    assert "--templates 'no-hole.txt' is neither a file nor a template" in capsys.readouterr().err


def test_class_files_in_order_or_as_a_mapping(tmp_path):
    listed = tmp_path / "names.txt"
    listed.write_text("ankle boot\nt-shirt\n\ntrouser\n")
    assert read_classes(str(listed), FOLDERS) == ["ankle boot", "t-shirt", "trouser"]
    with pytest.raises(DataError, match=r"lists 3 class names; the data set has 2 classes \(in this order: a, b\)"):
        read_classes(str(listed), ["a", "b"])
    mapping = tmp_path / "names.json"
    mapping.write_text(json.dumps({"boot": "ankle boot"}))
    with pytest.raises(DataError, match=r"maps no name for the data set's classes \['shirt', 'trouser'\]"):
        read_classes(str(mapping), FOLDERS)
    repeated = tmp_path / "repeated.json"
    repeated.write_text(json.dumps(["a", "a", "b"]))
    with pytest.raises(DataError, match=r"names \['a'\] more than once"):
        read_classes(str(repeated), FOLDERS)
    with pytest.raises(ConfigError, match="but the data set is unlabelled"):
        read_classes(str(listed), None)


def test_templates_are_checked_like_every_template():
    assert read_templates(["a {c}.", "a {}.", "the {}"]) == ["a {}.", "the {}"]
    with pytest.raises(ConfigError, match="has 2 {} where one label goes"):
        read_templates(["a {} and a {}"])


def test_a_checkpoint_is_identified_by_its_folder(folder, tmp_path):
    from tiny_clip import make_tiny_clip_folder

    from vledge.bundle import folder_fingerprint

    checkpoint = make_tiny_clip_folder(tmp_path / "clip")
    out = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint), "--data", str(folder), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["model"] == {"path": str(checkpoint), "kind": "checkpoint", "sha256": folder_fingerprint(checkpoint),
                               "hash_of": "the folder's files"}
    assert record["prompts"]["classes"] == FOLDERS and record["metrics"]["acc5"] is None


def test_a_split_folder_is_evaluated_on_its_test_split_by_default(bundle, tmp_path):
    rng = np.random.default_rng(2)
    for split, n in (("train", 1), ("test", 2)):
        for name in FOLDERS:
            (tmp_path / "tree" / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "tree" / split / name / f"{i}.png")
    out = tmp_path / "eval.json"
    assert main(["eval", str(bundle), "--data", str(tmp_path / "tree"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["split"] == "test" and record["split_requested"] is None and record["images"] == 6
    assert main(["eval", str(bundle), "--data", str(tmp_path / "tree"), "--split", "train", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["images"] == 3
