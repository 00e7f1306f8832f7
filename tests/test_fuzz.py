"""Property-based fuzzing (Hypothesis): whatever a manifest, label set, image, text or argument holds, the API
answers or raises a ``VledgeError``. Nothing else escapes, nothing hangs; whatever reaches a framework's native
parser (a corrupted tower) runs in a child process, so an abort there cannot take the test run with it.

Fixed seed (``derandomize=True``, no example database): the same examples on every run. EXAMPLES sets how
many each property tries; ``test_the_fuzz_suite_ran_its_examples`` checks the total (at least 10,000).
"""

import copy
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import vledge  # noqa: E402
from bundles import build_bundle  # noqa: E402
from faults import CHILD_ENV  # noqa: E402
from vledge.bundle import MANIFEST, BundleManifest  # noqa: E402
from vledge.bundle_files import parse_json  # noqa: E402
from vledge.errors import BundleError, ConfigError, VledgeError  # noqa: E402
from vledge.label_set import parse_embeddings, parse_label_record  # noqa: E402
from vledge.text import fill_templates  # noqa: E402

EXAMPLES = {"manifest_fields": 3000, "manifest_bytes": 1200, "label_embeddings": 1500, "label_records": 1000,
            "templates": 1500, "images": 700, "texts": 700, "classify": 700, "load": 150}
RAN: dict[str, int] = {}


def fuzz(name):
    return settings(max_examples=EXAMPLES[name], derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


def ran(name):
    RAN[name] = RAN.get(name, 0) + 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
DELETE = object()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("fuzz") / "bundle")


@pytest.fixture(scope="module")
def manifest(bundle):
    return json.loads((bundle / MANIFEST).read_text())


@pytest.fixture(scope="module")
def model(bundle):
    return vledge.load(bundle, threads=1)


def paths_of(value, prefix=()):
    """Every key path in a JSON value (the places a mutation can hit)."""
    out = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        out += paths_of(child, prefix + (key,))
    return out


def mutate(data, path, value):
    target = data
    for key in path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            return
    if not isinstance(target, (dict, list)):
        return
    try:
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass


@st.composite
def mutated_manifests(draw, base):
    data = copy.deepcopy(base)
    paths = paths_of(base)
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.one_of(json_values, st.just(DELETE), st.integers(-3, 70000), st.floats(-2e3, 2e3)))
        mutate(data, draw(st.sampled_from(paths)), value)
    return data


# --- manifests


def test_manifest_fields(manifest):
    @fuzz("manifest_fields")
    @given(mutated_manifests(manifest))
    def check(data):
        ran("manifest_fields")
        try:
            parsed = BundleManifest.from_dict(data)
        except BundleError:
            return
        assert math.isfinite(parsed.logit_scale) and 0 < parsed.logit_scale <= 1000
        assert set(parsed.towers) <= {"image", "text"} and parsed.towers

    check()


def test_manifest_bytes(manifest):
    text = json.dumps(manifest)

    @fuzz("manifest_bytes")
    @given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                     st.tuples(st.integers(0, len(text)), st.binary(max_size=20)).map(
                         lambda cut: (text[: cut[0]]).encode() + cut[1])))
    def check(data):
        ran("manifest_bytes")
        try:
            BundleManifest.from_dict(parse_json(data, MANIFEST))
        except BundleError:
            pass

    check()


# --- label sets


DTYPES = ["<f4", "<f8", "<f2", ">f4", "<i8", "|u1", "<c8", "|O", "<U3", "|b1", "[('a', '<f4')]", "('<f4', (2,))", "zz"]


@st.composite
def npy_files(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    shape = draw(st.lists(st.integers(-2, 10**12) | st.integers(0, 20), max_size=3).map(tuple))
    dtype = draw(st.sampled_from(DTYPES))
    header = "{'descr': %s, 'fortran_order': %s, 'shape': %r}" % (
        dtype if dtype.startswith(("[", "(")) else repr(dtype), draw(st.sampled_from(["False", "True", "0", "'x'"])), shape)
    header = header.encode() + b" " * draw(st.integers(0, 70)) + b"\n"
    version = draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x09"]))
    size = len(header).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    body_size = draw(st.integers(0, 800))
    body = draw(st.sampled_from([b"\0", b"\xff", b"\x3f"])) * body_size
    return b"\x93NUMPY" + version + size + header + body


def test_label_embeddings():
    @fuzz("label_embeddings")
    @given(npy_files(), st.integers(1, 5), st.integers(1, 8))
    def check(data, rows, dim):
        ran("label_embeddings")
        names = [f"label{i}" for i in range(rows)]
        try:
            out = parse_embeddings(data, "e.npy", names, dim, "labels.json")
        except BundleError:
            return
        assert out.shape == (rows, dim) and out.dtype == np.float32 and np.isfinite(out).all()
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1.1e-3)

    check()


def test_label_records():
    names = st.lists(st.one_of(st.text(max_size=6), json_values), max_size=5)

    @fuzz("label_records")
    @given(st.one_of(json_values, st.fixed_dictionaries({"names": names}, optional={"templates": json_values}),
                     st.fixed_dictionaries({"names": st.lists(st.text(max_size=6), min_size=1, max_size=4)},
                                           optional={"templates": st.lists(st.text(max_size=10), max_size=3)})))
    def check(record):
        ran("label_records")
        try:
            got, templates = parse_label_record(record, "labels.json")
        except BundleError:
            return
        assert got and len(set(got)) == len(got) and all(isinstance(n, str) and n for n in got)
        if templates is not None:
            fill_templates(got, templates)  # a record that passed fills every template without error

    check()


def test_templates():
    @fuzz("templates")
    @given(st.text(alphabet=st.sampled_from("{}:>0!rsa x\ud800é") | st.characters(), max_size=24),
           st.text(max_size=8))
    def check(template, name):
        ran("templates")
        try:
            (filled,) = fill_templates([name], [template])
        except ConfigError:
            return
        # A template that passed holds one bare {} and doubled braces only, so str.format is safe on it here,
        # and is the reference: the same text, the label at {}, braces undoubled.
        assert filled == template.format(name)

    check()


# --- inputs to a loaded model


@st.composite
def image_inputs(draw):
    kind = draw(st.sampled_from(["array", "pil", "bytes", "other", "list"]))
    if kind == "array":
        dtype = draw(st.sampled_from([np.uint8, np.uint8, np.float32, np.int16, np.bool_]))
        shape = tuple(draw(st.lists(st.integers(0, 40), min_size=0, max_size=4)))
        return np.full(shape, draw(st.integers(0, 255)), dtype=np.uint8).astype(dtype)
    if kind == "pil":
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16", "F", "CMYK", "LA"]))
        return Image.new(mode, (draw(st.integers(0, 50)), draw(st.integers(0, 50))))
    if kind == "bytes":
        if draw(st.booleans()):
            buf = io.BytesIO()
            Image.new("RGB", (draw(st.integers(1, 40)), draw(st.integers(1, 40)))).save(buf, format="PNG")
            data = buf.getvalue()
            return data[: draw(st.integers(0, len(data)))]
        return draw(st.binary(max_size=64))
    if kind == "other":
        return draw(st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.dictionaries(st.text(), st.none())))
    return draw(st.lists(image_inputs(), max_size=3))


def test_images(model):
    @fuzz("images")
    @given(image_inputs())
    def check(images):
        ran("images")
        try:
            out = model.encode_image(images)
        except VledgeError:
            return
        assert out.ndim == 2 and out.shape[1] == 16 and np.isfinite(out).all()

    check()


def test_texts(model):
    text = st.text(st.characters() | st.sampled_from(["\ud800", "\udfff", "\x00", "{"]), max_size=40)

    @fuzz("texts")
    @given(st.one_of(text, st.lists(st.one_of(text, st.none(), st.integers(), st.binary(max_size=4)), max_size=4),
                     st.none(), st.integers(), st.binary(max_size=8)))
    def check(texts):
        ran("texts")
        try:
            out = model.encode_text(texts)
        except VledgeError:
            return
        assert out.shape[1] == 16 and np.isfinite(out).all()

    check()


def test_classify_arguments(model):
    frame = np.zeros((28, 28), np.uint8)
    labels = st.one_of(st.none(), st.lists(st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=4),
                       st.text(max_size=5), st.integers())
    top_k = st.one_of(st.integers(-2, 10), st.floats(), st.none(), st.text(max_size=2), st.booleans())
    templates = st.one_of(st.none(), st.lists(st.text(alphabet="{}ab :>0", max_size=8), max_size=3), st.text(max_size=4))

    @fuzz("classify")
    @given(labels, top_k, templates)
    def check(labels, top_k, templates):
        ran("classify")
        try:
            ranked = model.classify(frame, labels, top_k=top_k, templates=templates)
        except VledgeError:
            return
        assert ranked.top and all(0 <= p <= 1 for _, p in ranked.top)

    check()


# --- whole bundles, loaded in a child process


LOAD_FUZZ = r"""
import json, shutil, sys, tempfile
from pathlib import Path
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
import vledge
from vledge.bundle import write_manifest
from vledge.bundle_files import read_manifest
from vledge.errors import VledgeError

bundle, examples = Path(sys.argv[1]), int(sys.argv[2])
files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
work = Path(tempfile.mkdtemp())
counts = {"examples": 0, "loaded": 0, "refused": 0}

@settings(max_examples=examples, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(files), st.sampled_from(["flip", "truncate", "replace", "append"]),
       st.integers(0, 10**6), st.binary(min_size=1, max_size=16), st.booleans())
def check(name, how, at, junk, rehash):
    counts["examples"] += 1
    copy = work / "b"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle, copy)
    path = copy / name
    data = bytearray(path.read_bytes())
    at %= max(len(data), 1)
    if how == "flip":
        data[at:at + len(junk)] = bytes(b ^ j for b, j in zip(data[at:at + len(junk)], junk))
    elif how == "truncate":
        data = data[:at]
    elif how == "replace":
        data = bytearray(junk * (at % 64 + 1))
    else:
        data += junk
    path.write_bytes(bytes(data))
    if rehash and name != "vledge.json":
        try:
            write_manifest(copy, read_manifest(copy, verify=False))  # reaches the parsers, past the sha256
        except VledgeError:
            pass
    try:
        model = vledge.load(copy, backend="onnxruntime", threads=1)
        model.classify(np.zeros((28, 28), np.uint8), top_k=2)
        model.encode_text(["a bag"])
        counts["loaded"] += 1
    except VledgeError:
        counts["refused"] += 1

check()
print(json.dumps(counts))
"""


def test_load_corrupted_bundles_in_a_child(bundle):
    done = subprocess.run([sys.executable, "-c", LOAD_FUZZ, str(bundle), str(EXAMPLES["load"])], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **CHILD_ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["examples"] >= EXAMPLES["load"] and counts["refused"] > 0, counts
    print(f"corrupted bundles: {counts}")
    RAN["load"] = counts["examples"]


def test_the_fuzz_suite_ran_its_examples():
    if set(RAN) != set(EXAMPLES):
        pytest.skip(f"only part of the fuzz suite ran ({sorted(RAN)})")
    print(f"fuzz examples: {sum(RAN.values())} {RAN}")
    assert sum(RAN.values()) >= 10_000, RAN
