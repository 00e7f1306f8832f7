"""Every manifest field, the compiled label set and the opened towers, checked at load: one BundleError each.

A bundle written broken (``rehash`` after the change, so every sha256 matches) must fail at load with a
message naming what is wrong, never a framework traceback at the first call, and never silently.
"""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest

import vledge
from bundles import build_bundle, edit_manifest, rehash, sample_images
from vledge.bundle import MANIFEST
from vledge.errors import BundleError, ConfigError, VledgeError
from vledge.label_set import parse_embeddings


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("checks") / "bundle")


@pytest.fixture
def bundle(original, tmp_path):
    return shutil.copytree(original, tmp_path / "bundle")



def tower(d, kind="image"):
    return d["towers"][kind]


# --- manifest fields: types and ranges


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(logit_scale=float("nan")), r"field logit_scale must be a finite number above 0 and at most 1000, "
                                                   r"got float nan: it multiplies every cosine"),
    (lambda d: d.update(logit_scale=1e308), r"logit_scale must be a finite number .* got float 1e\+308"),
    (lambda d: d.update(logit_scale=-14.3), r"logit_scale .* got float -14.3: .*a negative one inverts every ranking"),
    (lambda d: d.update(logit_scale=0), r"logit_scale .* got int 0"),
    (lambda d: d.update(logit_scale="14"), r"logit_scale .* got str '14'"),
    (lambda d: d.update(logit_scale=True), r"logit_scale .* got bool True"),
    (lambda d: d.update(embed_dim="16"), r"field embed_dim must be a whole number from 1 to 65536, got str '16'"),
    (lambda d: d.update(embed_dim=10**30), r"field embed_dim must be a whole number from 1 to 65536, got int 1000000"),
    (lambda d: d.update(embed_dim=32), r"the image tower outputs 16 values per input but embed_dim is 32"),
    (lambda d: d.update(towers=[1, 2]), r"field towers must be an object, got list \[1, 2\]"),
    (lambda d: d.update(towers={}), r"field towers must be an object with an 'image' and/or a 'text' tower, got dict \{\}"),
    (lambda d: d["towers"].update(audio=tower(d)), r"names a tower of unknown kind 'audio': a bundle holds an 'image' "
                                                   r"and/or a 'text' tower"),
    (lambda d: d.pop("target"), r"vledge.json has no field target; it is incomplete"),
    (lambda d: d.update(target=["cpu"]), r"field target must be a non-empty string, got list"),
    (lambda d: d.update(format_version=True), r"bundle format version True is not supported"),
    (lambda d: d.update(preprocess=None), r"field preprocess must be an object, got NoneType None"),
    (lambda d: d["preprocess"].update(image_size=10**9), r"preprocess.image_size must be a whole number from 1 to 8192"),
    (lambda d: d["preprocess"].update(mean=[0.5, "x", 0.5]), r"preprocess.mean must be a list of three finite numbers"),
    (lambda d: d["preprocess"].update(std=[0.5, 0, 0.5]), r"preprocess.std must be three numbers above 0"),
    (lambda d: d["preprocess"].update(interpolation="lanczos"), r"interpolation must be one of \['bicubic', 'bilinear'\]"),
    (lambda d: d["tokenizer"].update(max_length=-1), r"tokenizer.max_length must be a whole number from 1 to 16384"),
    (lambda d: d["tokenizer"].update(pad_id=1.5), r"tokenizer.pad_id must be a whole number"),
    (lambda d: tower(d).update(inputs=[]), r"towers.image.inputs must be a non-empty list, got list \[\]"),
    (lambda d: tower(d)["inputs"][0].update(shape=[-1, 3, 28, 28]),
     r"towers.image.inputs\[0\].shape must be a list of 1 to 8 axes, each a size of at least 1 .*a static batch of 0 "
     r"or less cannot run"),
    (lambda d: tower(d)["inputs"][0].update(shape=[0, 3, 28, 28]), r"towers.image.inputs\[0\].shape must be"),
    (lambda d: tower(d)["inputs"][0].update(dtype="complex64"), r"towers.image.inputs\[0\].dtype must be one of float32"),
    (lambda d: tower(d)["inputs"][0].update(dtype="int64"), r"towers.image.inputs\[0\] must be a 4-D float tensor"),
    (lambda d: tower(d)["inputs"][0].update(shape=["batch", 3, 32, 32]),
     r"the image tower takes 32 x 32 pixels but vledge.json preprocesses images to 28 x 28"),
    (lambda d: tower(d, "text")["inputs"].pop(), r"towers.text.inputs must be two 2-D integer tensors"),
    (lambda d: tower(d, "text")["inputs"][1].update(name="input_ids"), r"towers.text.inputs must be tensors of distinct names"),
    (lambda d: tower(d)["outputs"][0].update(shape=["batch", 16, 1]), r"towers.image.outputs\[0\] must be a 2-D float tensor"),
    (lambda d: tower(d).update(requires_isa="vnni"), r"towers.image.requires_isa must be a list of strings, got str 'vnni'"),
    (lambda d: tower(d).update(requires_isa=["sse9"]), r"requires_isa names 'sse9', a CPU requirement unknown to this vledge"),
    (lambda d: tower(d).update(fallback=["x.onnx"]), r"towers.image.fallback must be an object or null, got list"),
    (lambda d: tower(d).update(fallback={"reason": "?"}), r"towers.image.fallback must be an object naming a file or float_qdq"),
    (lambda d: tower(d).update(fallback={"file": 7}), r"towers.image.fallback.file must be a non-empty string, got int 7"),
    (lambda d: tower(d).update(fallback={"file": "image_encoder.onnx"}), r"fallback.file must be a file other than the tower's"),
    (lambda d: tower(d).update(fallback={"float_qdq": "yes"}), r"towers.image.fallback.float_qdq must be true or false"),
    (lambda d: tower(d).update(fallback={"file": "elsewhere.onnx"}), r"elsewhere.onnx is used by the bundle but has no sha256"),
    (lambda d: d["files"].update({"labels.json": "abc"}), r"files\['labels.json'\] must be a sha256 as 64 lower-case hex"),
    (lambda d: d.update(labels={"file": "labels.json"}), r"vledge.json has no field labels.embeddings"),
    (lambda d: d.update(metrics=[]), r"field metrics must be an object, got list"),
])
def test_manifest_field_of_the_wrong_type_or_range(bundle, change, message):
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, r"vledge.json is not valid JSON for vledge: nested too deeply"),
    ('{"format": "vledge-bundle", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", r"nested too deeply"),
    ("{}", r"not a vledge bundle manifest \(format=None\)"),
    ('{"format": "vledge-bundle", "format_version": 1}', r"vledge.json has no field target; it is incomplete"),
    ('{"format": "vledge-bundle", "format_version": 1, "embed_dim": ' + "9" * 5000 + "}", r"vledge.json is not valid JSON: "),
    (b"\xff\xfe{}", r"vledge.json is not valid JSON: not UTF-8 text"),
])
def test_malformed_manifest_json(bundle, text, message):
    (bundle / MANIFEST).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle)


def test_towers_as_a_list_and_a_missing_key_from_the_cli(bundle):
    from faults import assert_clean_failure, run_vledge

    edit_manifest(bundle, lambda d: d.update(towers=list(d["towers"].values())))
    assert_clean_failure(run_vledge("run", bundle, "x.png"), "run", "field towers must be an object, got list")


# --- the towers as opened, against the manifest


@pytest.mark.parametrize("change, message", [
    (lambda d: tower(d)["inputs"][0].update(name="pixels"),
     r"the image tower image_encoder.onnx takes inputs \['pixel_values'\], but vledge.json lists \['pixels'\]"),
    (lambda d: tower(d)["inputs"][0].update(dtype="float16"),
     r"the image tower image_encoder.onnx takes pixel_values as float32, but vledge.json says float16"),
    (lambda d: tower(d, "text")["inputs"][0].update(dtype="int32"),
     r"the text tower text_encoder.onnx takes input_ids as int64, but vledge.json says int32"),
    (lambda d: (d["preprocess"].update(image_size=32), tower(d)["inputs"][0].update(shape=["batch", 3, 32, 32])),
     r"the image tower image_encoder.onnx takes pixel_values of shape \(\?, 3, 28, 28\), but vledge.json .* gives it 32 on "
     r"axis 2"),
    (lambda d: tower(d)["inputs"][0].update(shape=["batch", 3, 28]), r"must be a 4-D float tensor"),
    (lambda d: (d.update(embed_dim=24), tower(d)["outputs"][0].update(shape=["batch", 24]),
                tower(d, "text")["outputs"][0].update(shape=["batch", 24]), d.update(labels=None)),
     r"the image tower image_encoder.onnx outputs shape \(\?, 16\), but vledge.json says \(batch, 24\) \(embed_dim\)"),
    # The tokenizer's max length against the position table: 100 positions asked of a 64-row table.
    (lambda d: d["tokenizer"].update(max_length=100),
     r"the text tower fails on 100 tokens \(the tokenizer's max_length\) of id \d+ \(its highest\): .*its tables may be "
     r"smaller than the tokenizer or preprocessing in vledge.json needs"),
])
def test_manifest_against_the_opened_towers(bundle, change, message):
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle, backend="onnxruntime")


def test_openvino_checks_the_towers_it_opened(tmp_path):
    pytest.importorskip("openvino")
    ir = build_bundle(tmp_path / "ir", openvino=True, target="intel-cpu")
    edit_manifest(ir, lambda d: tower(d)["inputs"][0].update(name="pixels"))
    with pytest.raises(BundleError, match=r"the image tower image_encoder.xml takes inputs \['pixel_values'\], but "
                                          r"vledge.json lists \['pixels'\]"):
        vledge.load(ir)


def test_token_ids_past_the_vocabulary_table(bundle):
    # A tokenizer with more tokens than the text tower's embedding table: the highest id fails at load.
    from vledge.text import build_wordpiece

    words = [f"word{i} thing{i * 7} other{i * 13}" for i in range(400)]
    build_wordpiece(words, vocab_size=2000, max_length=16).save(bundle)
    rehash(bundle)
    with pytest.raises(BundleError, match=r"the text tower fails on 16 tokens \(the tokenizer's max_length\) of id "
                                          r"(\d{3,4}) \(its highest\)"):
        vledge.load(bundle)


def test_pad_id_outside_the_vocabulary(bundle):
    edit_manifest(bundle, lambda d: d["tokenizer"].update(pad_id=100_000))
    with pytest.raises(BundleError, match=r"tokenizer .*tokenizer.json has \d+ tokens, so its pad_id 100000 is no token of it"):
        vledge.load(bundle)


def test_static_text_length_against_the_tokenizer(tmp_path):
    static = build_bundle(tmp_path / "static", static_batch=2, static_seq=16)
    edit_manifest(static, lambda d: d["tokenizer"].update(max_length=32))
    with pytest.raises(BundleError, match=r"the text tower takes 16 tokens \(input_ids\) but the tokenizer's max_length "
                                          r"in vledge.json is 32"):
        vledge.load(static)
    # The manifest made to agree with the tokenizer, but not with the graph it describes.
    edit_manifest(static, lambda d: [t.update(shape=[2, 32]) for t in tower(d, "text")["inputs"]])
    with pytest.raises(BundleError, match=r"the text tower text_encoder.onnx takes (input_ids|attention_mask) of shape "
                                          r"\(2, 16\), but .* gives it 32 on axis 1"):
        vledge.load(static)


# --- the compiled label set


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def unit_rows(n=4, dim=16, dtype=np.float32):
    rows = np.random.default_rng(0).normal(size=(n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(dtype)


def forged_header(shape, dtype="<f4", body=b"\0" * 200) -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


def npz() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("arr_0.npy", npy(unit_rows()))
    return buf.getvalue()


def nan_rows():
    rows = unit_rows()
    rows[2, 5] = np.nan
    return rows


def inf_rows():
    rows = unit_rows()
    rows[1, 0] = np.inf
    return rows


@pytest.mark.parametrize("data, message", [
    (lambda: npy(nan_rows()), r"label_embeddings.npy row 2 \('sneaker'\) holds NaN or infinite values"),
    (lambda: npy(inf_rows()), r"row 1 \('trouser'\) holds NaN or infinite values"),
    (lambda: npy(unit_rows() * 3), r"row 0 \('t-shirt'\) has norm 3; label embeddings must be L2-normalised \(norm 1 "
                                   r"within 0.001\)"),
    (lambda: npy(np.zeros((4, 16), np.float32)), r"row 0 \('t-shirt'\) has norm 0"),
    (lambda: npy(np.ones((4, 16), np.int64)), r"holds int64 values; label embeddings must be floats"),
    (lambda: npy(unit_rows().astype(np.complex64)), r"holds complex64 values; label embeddings must be floats"),
    (lambda: npy(np.array(["a", "b", "c", "d"])), r"holds <U1 values; label embeddings must be floats"),
    (lambda: npy(np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4")])), r"holds \[\('x', '<f4'\), \('y', '<f4'\)\] values"),
    (lambda: npy(np.zeros((4, 16), dtype=("<f4", (2,)))), r"label_embeddings.npy (holds|has shape)"),
    (lambda: forged_header((10**11, 16)), r"header claims an array of shape \(100000000000, 16\) \(6400000000000 bytes\) "
                                          r"but the file holds 200 bytes after it: it is truncated or forged"),
    (lambda: forged_header((4, 16), body=b"\0" * 255), r"header claims an array of shape \(4, 16\) \(256 bytes\) but the "
                                                       r"file holds 255 bytes"),
    (lambda: forged_header((-4, -16), body=b"\0" * 256), r"header claims a negative size"),
    (lambda: forged_header((4, 16), dtype="|O"), r"holds object values"),
    (npz, r"label_embeddings.npy is a .npz archive; label embeddings are one .npy array"),
    (lambda: b"plain text", r"label_embeddings.npy is not a .npy file"),
    (lambda: b"\x93NUMPY\x01\x00\x10\x00{'descr': ]]]}  \n", r"label_embeddings.npy has an unreadable .npy header"),
    (lambda: npy(unit_rows(3)), r"label_embeddings.npy has shape \(3, 16\), but labels.json names 4 labels"),
    (lambda: npy(unit_rows()[None]), r"label_embeddings.npy has shape \(1, 4, 16\)"),
])
def test_label_embeddings_are_checked_before_they_are_trusted(bundle, data, message):
    (bundle / "label_embeddings.npy").write_bytes(data())
    rehash(bundle)
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle)


def test_a_float16_or_fortran_label_set_loads(bundle):
    for rows in (unit_rows(dtype=np.float16), np.asfortranarray(unit_rows(dtype=np.float64))):
        (bundle / "label_embeddings.npy").write_bytes(npy(rows))
        rehash(bundle)
        np.testing.assert_allclose(vledge.load(bundle).label_set.embeddings, rows.astype(np.float32), atol=0)


def test_a_forged_header_allocates_nothing(monkeypatch):
    # The claimed size is refused before numpy is asked for memory.
    monkeypatch.setattr(np, "frombuffer", lambda *a, **k: pytest.fail("an array was made"))
    with pytest.raises(BundleError, match="truncated or forged"):
        parse_embeddings(forged_header((10**11, 16)), "e.npy", ["a"], 16, "labels.json")


@pytest.mark.parametrize("record, message", [
    ({"names": []}, r"labels.json lists no label names; a compiled label set needs at least one"),
    ({"names": ["bag", "coat", "bag", "shirt"]}, r"labels.json names 'bag' more than once; each label must appear once"),
    ({"names": "bag"}, r"labels.json must list label names as non-empty strings"),
    ({"names": ["bag", "", "a", "b"]}, r"labels.json must list label names as non-empty strings"),
    ([1, 2], r"labels.json must hold a JSON object with a list of names"),
    ({"names": ["bag", "coat", "\ud800", "b"]}, r"labels.json: a label name '\\ud800' is not valid Unicode"),
    ({"names": ["a", "b", "c", "d"], "templates": "a {}"}, r"labels.json templates must be a non-empty list of strings"),
    ({"names": ["a", "b", "c", "d"], "templates": []}, r"labels.json templates must be a non-empty list"),
    ({"names": ["a", "b", "c", "d"], "templates": [3]}, r"labels.json: prompt templates must be strings, got int"),
    ({"names": ["a", "b", "c", "d"], "templates": ["{:>400000000}"]},
     r"labels.json: prompt template '\{:>400000000\}' has a brace that is not a bare \{\}"),
    ({"names": ["a", "b", "c", "d"], "templates": ["a {} of {}"]}, r"prompt template 'a \{\} of \{\}' has 2 \{\}"),
    ({"names": ["a", "b", "c", "d"], "templates": ["photo"]}, r"prompt template 'photo' has no \{\} for the label"),
])
def test_label_names_and_templates_are_checked(bundle, record, message):
    (bundle / "labels.json").write_text(json.dumps(record))
    rehash(bundle)
    with pytest.raises(BundleError, match=message):
        vledge.load(bundle)


def test_deeply_nested_labels_json(bundle):
    (bundle / "labels.json").write_text('{"names": ' + "[" * 100_000 + "]" * 100_000 + "}")
    rehash(bundle)
    with pytest.raises(BundleError, match=r"labels.json is not valid JSON for vledge: nested too deeply"):
        vledge.load(bundle)


def test_a_format_spec_template_from_a_bundle_never_reaches_the_tokenizer(tmp_path):
    # The case that aborted the process: {:>400000000} in labels.json. Run in a child: an abort must not kill pytest.
    import subprocess
    import sys

    from faults import CHILD_ENV

    bundle = build_bundle(tmp_path / "bundle")
    record = json.loads((bundle / "labels.json").read_text())
    (bundle / "labels.json").write_text(json.dumps({**record, "templates": ["{:>400000000}"]}))
    rehash(bundle)
    code = ("import sys, vledge\n"
            "try:\n    vledge.load(sys.argv[1])\nexcept vledge.errors.BundleError as exc:\n    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, **CHILD_ENV})
    assert done.returncode == 0, done.stderr
    assert "refused: labels.json: prompt template '{:>400000000}' has a brace" in done.stdout


def test_a_format_spec_template_from_a_caller(original):
    model = vledge.load(original)
    with pytest.raises(ConfigError, match=r"prompt template '\{:>400000000\}' has a brace that is not a bare \{\}"):
        model.classify(sample_images(1), ["bag"], templates=["{:>400000000}"])
    assert isinstance(ConfigError("x"), VledgeError)
