"""Data loaders on small real data: Fashion-MNIST, scikit-learn digits, captions files, ImageFolder trees."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vledge.data import (
    CaptionsDataset, Digits, FashionMNIST, ImageFolderDataset, Subset, load_dataset, split,
)
from vledge.data.digits import split_indices
from vledge.errors import ConfigError, DataError, ImageDecodeError, MissingDependencyError
from vledge.images import PreprocessSpec, preprocess

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SPEC = PreprocessSpec(image_size=16)


@pytest.fixture(scope="module")
def fashion_test():
    if not FASHION_DIR.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    return load_dataset("fashion-mnist", "test")


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return load_dataset("digits", "train")


# --- built-in sets


def test_fashion_mnist_slice(fashion_test):
    assert isinstance(fashion_test, FashionMNIST) and len(fashion_test) == 10_000
    assert fashion_test.image(0).shape == (28, 28) and fashion_test.image(0).dtype == np.uint8
    labels = [fashion_test.label(i) for i in range(500)]
    assert set(labels) == set(range(10))  # all ten classes turn up, nothing outside 0..9
    for i in range(20):
        assert fashion_test.classes[fashion_test.label(i)] in fashion_test.caption(i)
    batch = fashion_test.batch(range(8), SPEC)
    assert batch.pixels.shape == (8, 3, 16, 16) and batch.pixels.dtype == np.float32
    assert batch.labels.dtype == np.int64 and batch.labels.tolist() == labels[:8]
    assert batch.indices.tolist() == list(range(8)) and batch.skipped == []
    np.testing.assert_allclose(batch.pixels, preprocess([fashion_test.image(i) for i in range(8)], SPEC), atol=1e-6)
    assert fashion_test.describe() == "fashion-mnist/test: 10000 images, 10 classes"


def test_digits_split_is_fixed_and_disjoint(digits):
    test = load_dataset("digits", "test")
    assert isinstance(digits, Digits) and (len(digits), len(test)) == (1438, 359)
    train_idx, test_idx = split_indices(1797, "train"), split_indices(1797, "test")
    assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == 1797
    np.testing.assert_array_equal(load_dataset("digits", "test").pixels, test.pixels)  # deterministic
    assert digits.pixels.dtype == np.uint8 and digits.pixels.max() == 255 and digits.pixels.min() == 0
    assert sorted(set(digits.labels.tolist())) == list(range(10))
    assert digits.caption(0) == f"a photo of the digit {digits.classes[digits.label(0)]}."
    batch = digits.batch([3, 1, 2], SPEC, variant=1)
    assert batch.pixels.shape == (3, 3, 16, 16) and batch.labels.tolist() == [digits.label(i) for i in (3, 1, 2)]
    assert batch.captions[0] == digits.caption(3, variant=1) != digits.caption(3)
    assert "1438 8x8 grayscale images" in digits.describe()


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r'sklearn.datasets is not installed.*vledge\[digits\]'):
        Digits("train")


def test_builtin_errors():
    with pytest.raises(DataError, match=r"digits split must be 'train' or 'test', got 'dev'"):
        load_dataset("digits", "dev")
    with pytest.raises(ConfigError, match=r"digits ships inside scikit-learn and reads no data_dir"):
        load_dataset("digits", data_dir="/tmp")


def test_unknown_name_suggests_and_lists():
    with pytest.raises(ConfigError) as info:
        load_dataset("fashon-mnist")
    message = str(info.value)
    assert "unknown data set 'fashon-mnist'. Did you mean 'fashion-mnist'?" in message
    assert "Known: digits, fashion-mnist" in message and "captions file (.csv / .jsonl" in message
    with pytest.raises(ConfigError, match=r"unknown data set 'imagenet'\. Known: digits, fashion-mnist"):
        load_dataset("imagenet")


# --- folders made from real pixels


@pytest.fixture(scope="module")
def digit_files(digits, tmp_path_factory):
    """Twelve real digits saved as PNG (lossless) under images/, with their labels."""
    root = tmp_path_factory.mktemp("digits")
    (root / "images").mkdir()
    rows = []
    for i in range(12):
        name = f"images/{i:02d}.png"
        Image.fromarray(digits.image(i)).save(root / name)
        label = digits.classes[digits.label(i)]
        rows.append((name, f"a scanned handwritten {label}", label))
    return root, rows


def _write_csv(path, header, rows):
    path.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")


def test_csv_captions_folder(digits, digit_files):
    root, rows = digit_files
    _write_csv(root / "captions.csv", "path,caption,label", rows)
    ds = load_dataset(str(root))
    assert isinstance(ds, CaptionsDataset) and ds.has_captions and len(ds) == 12
    assert ds.classes == sorted({r[2] for r in rows})
    assert ds.image(0) == str(root / "images/00.png")  # relative to the captions file
    assert ds.caption(4, variant=3) == rows[4][1]  # real captions ignore the template variant
    assert [ds.classes[ds.label(i)] for i in range(12)] == [r[2] for r in rows]
    batch = ds.batch(range(12), SPEC)
    assert batch.skipped == [] and batch.pixels.shape == (12, 3, 16, 16)
    np.testing.assert_allclose(batch.pixels, digits.batch(range(12), SPEC).pixels, atol=1e-6)  # PNG is lossless
    expected = f"{root.name}: 12 image-caption pairs from {root / 'captions.csv'}, {len(ds.classes)} classes"
    assert ds.describe() == expected
    (root / "captions.csv").unlink()


def test_jsonl_captions_file_unlabelled(digit_files):
    root, rows = digit_files
    file = root / "pairs.jsonl"
    file.write_text("\n".join(json.dumps({"path": p, "caption": c}) for p, c, _ in rows[:5]) + "\n\n")
    ds = load_dataset(file)
    assert len(ds) == 5 and ds.classes is None and ds.label(2) == -1
    batch = ds.batch([0, 4], SPEC)
    assert batch.captions == [rows[0][1], rows[4][1]] and batch.labels.tolist() == [-1, -1]


def test_partly_labelled_captions_are_unlabelled(digit_files, tmp_path, caplog):
    root, rows = digit_files
    file = tmp_path / "captions.csv"
    _write_csv(file, "path,caption,label", [(str(root / p), c, lab if i else "") for i, (p, c, lab) in enumerate(rows)])
    with caplog.at_level(logging.WARNING, logger="vledge.data.captions"):
        ds = load_dataset(file)
    assert ds.classes is None and "11 of 12 rows have a label" in caplog.text
    assert ds.batch([0], SPEC).skipped == []  # absolute paths are kept


def test_missing_image_is_lazy_then_skipped(digit_files, tmp_path, caplog):
    root, rows = digit_files
    file = tmp_path / "captions.csv"
    _write_csv(file, "path,caption", [(str(root / rows[0][0]), "a digit"), ("gone.png", "a lost digit")])
    ds = load_dataset(file)  # not checked here
    with caplog.at_level(logging.WARNING):
        batch = ds.batch([0, 1], SPEC)
    missing = str(tmp_path / "gone.png")
    assert batch.skipped == [missing] and batch.indices.tolist() == [0] and batch.captions == ["a digit"]
    assert f"cannot decode image {missing}: file not found" in caplog.text


@pytest.mark.parametrize("name,text,message", [
    ("captions.csv", "path,caption\na.png,one\nb.png,two,extra\n", "captions.csv, line 3: 3 cells for 2 header columns"),
    ("captions.csv", "path,caption\na.png,one\nb.png,\n", "captions.csv, line 3: missing or empty 'caption' for 'b.png'"),
    ("captions.csv", "path,caption\n,one\n", "captions.csv, line 2: missing or empty 'path'"),
    ("captions.csv", "file,text\na.png,one\n", "captions.csv, line 1: header must name 'path' and 'caption'"),
    ("captions.jsonl", '{"path": "a.png", "caption": "one"}\n{"path": "b.png", caption: 2}\n',
     "captions.jsonl, line 2: invalid JSON"),
    ("captions.jsonl", '{"path": "a.png", "caption": "one", "label": 3}\n',
     "captions.jsonl, line 1: 'label' must be a class name string, got 3"),
    ("captions.jsonl", '["a.png", "one"]\n', "captions.jsonl, line 1: expected a JSON object, got list"),
    ("captions.csv", "", "captions.csv lists no images"),
])
def test_malformed_captions_name_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    assert str(tmp_path / name) in str(info.value) and message in str(info.value)


def test_both_captions_files_is_ambiguous(tmp_path):
    (tmp_path / "captions.csv").write_text("path,caption\na.png,one\n")
    (tmp_path / "captions.jsonl").write_text('{"path": "a.png", "caption": "one"}\n')
    with pytest.raises(DataError, match="holds both captions.csv and captions.jsonl"):
        load_dataset(tmp_path)


@pytest.fixture(scope="module")
def fashion_tree(fashion_test, tmp_path_factory):
    """train/ and test/ ImageFolder splits of real Fashion-MNIST images; test/ lacks the 'ankle_boot' class."""
    root = tmp_path_factory.mktemp("fashion")
    folders = {0: "t-shirt", 1: "trouser", 9: "ankle_boot"}
    wanted = {"train": {0: 3, 1: 2, 9: 2}, "test": {0: 1, 1: 2}}
    for split_name, counts in wanted.items():
        for label, count in counts.items():
            (root / split_name / folders[label]).mkdir(parents=True)
            found = [i for i in range(300) if fashion_test.label(i) == label][:count]
            for n, i in enumerate(found):
                suffix = (".png", ".JPG", ".Jpeg")[n % 3]  # extensions are case-insensitive
                Image.fromarray(fashion_test.image(i)).save(root / split_name / folders[label] / f"{i}{suffix}",
                                                          format="PNG" if suffix == ".png" else "JPEG")
    (root / "train" / "trouser" / "notes.txt").write_text("not an image, not listed")
    (root / "train" / "trouser" / ".hidden.png").write_text("editor junk, not listed")
    return root


def test_imagefolder_splits(fashion_tree):
    train, test = load_dataset(fashion_tree, "train"), load_dataset(fashion_tree, "test")
    assert isinstance(train, ImageFolderDataset) and not train.has_captions
    assert train.classes == test.classes == ["ankle boot", "t shirt", "trouser"]
    assert (len(train), len(test)) == (7, 3)
    assert [train.label(i) for i in range(7)] == [0, 0, 1, 1, 1, 2, 2]
    assert [test.label(i) for i in range(3)] == [1, 2, 2]  # indices agree although test has no ankle boot
    assert test.caption(0) == "a photo of a t shirt."
    assert load_dataset(fashion_tree, "val").root == test.root  # val falls back to test/
    batch = train.batch(range(7), SPEC)
    assert batch.pixels.shape == (7, 3, 16, 16) and batch.skipped == []
    assert all(train.classes[label] in caption for label, caption in zip(batch.labels, batch.captions))
    assert train.describe() == f"{fashion_tree.name}/train: 7 images in 3 class folders under {fashion_tree / 'train'}"
    with pytest.raises(DataError, match=r"has no 'dev' split; its split folders are \['test', 'train'\]"):
        load_dataset(fashion_tree, "dev")


def test_imagefolder_without_splits_is_the_whole_tree(fashion_tree, caplog):
    with caplog.at_level(logging.WARNING, logger="vledge.data"):
        whole = load_dataset(fashion_tree / "train", "test")
    assert len(whole) == 7 and whole.classes == ["ankle boot", "t shirt", "trouser"]
    assert "train has no separate 'test' split; using all of it (it may overlap the training data)" in caplog.text


def test_non_image_among_images_is_skipped_or_raises(fashion_tree, tmp_path, caplog):
    root = tmp_path / "tree"
    (root / "bag").mkdir(parents=True)
    real = Path(next(p for p in load_dataset(fashion_tree).paths if p.endswith(".png"))).read_bytes()
    for name in ("a.png", "c.png"):
        (root / "bag" / name).write_bytes(real)
    fake = root / "bag" / "b.png"
    fake.write_text("this is a text file wearing a .png name\n")
    ds = load_dataset(root)
    assert ds.image(1) == str(fake)
    with caplog.at_level(logging.WARNING, logger="vledge.data.base"):
        batch = ds.batch(range(3), SPEC)
    assert batch.skipped == [str(fake)] and batch.indices.tolist() == [0, 2] and len(batch.captions) == 2
    assert f"skipping cannot decode image {fake}" in caplog.text
    with pytest.raises(ImageDecodeError) as info:
        ds.batch(range(3), SPEC, strict=True)
    reason = "not an image format Pillow can read (wrong extension or corrupt header)"
    assert str(info.value) == f"cannot decode image {fake}: {reason}"


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match=r"data set path not found: .*nowhere"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"has no class subfolders; put the images in one folder per class"):
        load_dataset(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("no pictures yet")
    with pytest.raises(DataError, match=r"holds no images in its class folders \(extensions read: .bmp"):
        load_dataset(tmp_path)
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(DataError, match=r"list.txt is not a captions file"):
        load_dataset(tmp_path / "list.txt")
    with pytest.raises(ConfigError, match=r"data_dir only applies to built-in data sets"):
        load_dataset(tmp_path, data_dir=str(tmp_path))


# --- splits and subsets


def test_split_is_seeded_and_disjoint(digits):
    train, val = split(digits, 0.25, seed=3)
    again, _ = split(digits, 0.25, seed=3)
    other, _ = split(digits, 0.25, seed=4)
    assert len(val) == round(len(digits) * 0.25) and len(train) + len(val) == len(digits)
    assert not set(train.indices) & set(val.indices)
    np.testing.assert_array_equal(train.indices, again.indices)
    assert not np.array_equal(train.indices, other.indices)
    assert val.label(0) == digits.label(int(val.indices[0])) and val.classes == digits.classes


def test_subset_batch_maps_indices_back(fashion_tree, tmp_path):
    base = load_dataset(fashion_tree, "train")  # 7 images
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    base.paths[4] = str(broken)
    subset = Subset(base, [6, 4, 1, 0])  # unsorted on purpose
    batch = subset.batch([3, 1, 0, 2], SPEC)
    assert batch.skipped == [str(broken)]
    assert batch.indices.tolist() == [3, 0, 2]  # subset positions, not base positions
    assert batch.labels.tolist() == [subset.label(i) for i in (3, 0, 2)] == [0, 2, 0]
    assert batch.captions == [subset.caption(i) for i in (3, 0, 2)]
