"""Authenticity: Ed25519-signed manifests, trusted keys and pinning, all checked before any runtime opens a file."""

import json
import os
import shutil
import stat

import pytest

import vledge
from bundles import build_bundle, sample_images
from faults import assert_clean_failure, run_vledge
from vledge.bundle import MANIFEST, SIGNATURE, write_manifest
from vledge.bundle_files import read_manifest
from vledge.bundle_signing import sign_bundle
from vledge.errors import BundleError, ConfigError, MissingDependencyError, UntrustedBundleError
from vledge.runtimes.onnxruntime_backend import OnnxRuntime
from vledge.signing import generate_key_pair

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {"fleet": generate_key_pair(folder, "fleet"), "other": generate_key_pair(folder, "other")}


@pytest.fixture(scope="module")
def signed_original(tmp_path_factory, keys):
    bundle = build_bundle(tmp_path_factory.mktemp("signed") / "bundle")
    sign_bundle(bundle, keys["fleet"][0])
    return bundle


@pytest.fixture
def signed(signed_original, tmp_path):
    return shutil.copytree(signed_original, tmp_path / "bundle")


@pytest.fixture
def no_runtime(monkeypatch):
    """Records any attempt to open a runtime: a refused bundle must be refused before one."""
    opened = []
    monkeypatch.setattr(OnnxRuntime, "__init__", lambda self, *a, **k: opened.append(a) or pytest.fail("a runtime opened"))
    return opened


def test_keygen_writes_a_private_key_only_its_owner_reads(keys, tmp_path):
    private, public = keys["fleet"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ConfigError, match=r"fleet.key already exists; choose another --out folder or --name"):
        generate_key_pair(private.parent, "fleet")


def test_a_signed_bundle_loads_with_its_key(signed, keys):
    model = vledge.load(signed, trusted_keys=[keys["other"][1], keys["fleet"][1]])
    info = model.info()
    assert info["signed_by"] and info["signed_by"] == json.loads((signed / SIGNATURE).read_text())["key_id"]
    assert model.classify(sample_images(1), top_k=1)[0].label in model.label_set.names
    assert SIGNATURE not in read_manifest(signed).files  # the signature is beside the manifest, not in it
    assert stat.S_IMODE((signed / SIGNATURE).stat().st_mode) == 0o644


def test_keys_given_as_pem_bytes_raw_bytes_or_objects(signed, keys):
    from cryptography.hazmat.primitives import serialization

    pem = keys["fleet"][1].read_bytes()
    key = serialization.load_pem_public_key(pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for trusted in ([pem], [raw], [key], [str(keys["fleet"][1])]):
        vledge.load(signed, trusted_keys=trusted)


def test_an_unsigned_bundle_is_refused_when_keys_are_trusted(signed, keys, no_runtime):
    (signed / SIGNATURE).unlink()
    vledge.runtimes.load  # noqa: B018  (a bundle without trusted_keys still loads: see below)
    with pytest.raises(UntrustedBundleError, match=r"bundle is not signed \(no vledge.sig\) and this load trusts only "
                                                   r"bundles signed by its trusted keys; sign it with: vledge sign"):
        vledge.load(signed, trusted_keys=[keys["fleet"][1]])


def test_signed_by_another_key_is_refused(signed, keys, no_runtime):
    sign_bundle(signed, keys["other"][0])
    with pytest.raises(UntrustedBundleError, match=r"the signature of .*bundle verifies with none of the trusted keys "
                                                   r"\(signed by key id '[0-9a-f]{16}'; trusted: [0-9a-f]{16}\)"):
        vledge.load(signed, trusted_keys=[keys["fleet"][1]])


def test_a_tower_swapped_and_rehashed_is_refused(signed, keys, tmp_path, no_runtime):
    from tiny_models import tiny_dual_encoder
    from vledge.compress.export import export_onnx

    export_onnx(tiny_dual_encoder(seed=1), "image", tmp_path / "other.onnx")
    assert (tmp_path / "other.onnx").read_bytes() != (signed / "image_encoder.onnx").read_bytes()
    shutil.copyfile(tmp_path / "other.onnx", signed / "image_encoder.onnx")
    write_manifest(signed, read_manifest(signed, verify=False))  # every sha256 matches again
    assert read_manifest(signed, verify=True)
    with pytest.raises(UntrustedBundleError, match=r"verifies with none of the trusted keys"):
        vledge.load(signed, trusted_keys=[keys["fleet"][1]])


def _files(bundle):
    return sorted(p.name for p in bundle.iterdir())


@pytest.mark.parametrize("name", ["vledge.json", "vledge.sig", "image_encoder.onnx", "text_encoder.onnx",
                                  "tokenizer.json", "labels.json", "label_embeddings.npy", "probes/images.npy"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_one_byte_changed_anywhere_is_refused_before_a_runtime_opens(signed, keys, no_runtime, name, where):
    assert _files(signed) == sorted(["image_encoder.onnx", "label_embeddings.npy", "labels.json", "probes",
                                     "text_encoder.onnx", "tokenizer.json", "vledge.json", "vledge.sig"])
    data = bytearray((signed / name).read_bytes())
    at = {"start": 0, "middle": len(data) // 2, "end": len(data) - 2}[where]
    data[at] ^= 0x01
    (signed / name).write_bytes(bytes(data))
    with pytest.raises(BundleError) as caught:
        vledge.load(signed, trusted_keys=[keys["fleet"][1]])
    if name in (MANIFEST, SIGNATURE):
        assert isinstance(caught.value, UntrustedBundleError), caught.value
    else:
        assert f"bundle file {name} does not match its sha256" in str(caught.value)
    assert no_runtime == []


def test_the_signature_is_checked_before_the_manifest_is_parsed(signed, keys):
    (signed / MANIFEST).write_text("[" * 100_000)
    with pytest.raises(UntrustedBundleError, match="verifies with none of the trusted keys"):
        vledge.load(signed, trusted_keys=[keys["fleet"][1]])


@pytest.mark.parametrize("text, message", [
    ("not json", r"vledge.sig cannot be read"),
    ('{"format": "vledge-signature", "version": 1, "algorithm": "rsa"}',
     r"vledge.sig cannot be read \(not a vledge Ed25519 signature of version 1\)"),
    ('{"format": "vledge-signature", "version": 1, "algorithm": "ed25519", "signature": "***"}', r"vledge.sig cannot be read"),
    ('{"format": "vledge-signature", "version": 1, "algorithm": "ed25519", "signature": "AAAA"}',
     r"verifies with none of the trusted"),
])
def test_a_malformed_signature_file(signed, keys, text, message):
    (signed / SIGNATURE).write_text(text)
    with pytest.raises(UntrustedBundleError, match=message):
        vledge.load(signed, trusted_keys=[keys["fleet"][1]])


def test_pinning_the_manifest(signed):
    sha = vledge.load(signed).info()["manifest_sha256"]
    assert vledge.load(signed, manifest_sha256=sha.upper()).info()["manifest_sha256"] == sha
    edit = json.loads((signed / MANIFEST).read_text())
    edit["metrics"] = {"changed": True}
    (signed / MANIFEST).write_text(json.dumps(edit))
    with pytest.raises(UntrustedBundleError, match=rf"vledge.json has sha256 [0-9a-f]{{64}}, not the pinned {sha}: this is "
                                                   r"not the bundle you pinned; refusing to load it"):
        vledge.load(signed, manifest_sha256=sha)
    with pytest.raises(ConfigError, match=r"manifest_sha256 must be 64 hex digits"):
        vledge.load(signed, manifest_sha256="abc")


@pytest.mark.parametrize("trusted, message", [
    ("fleet.pub", r"trusted_keys must be a list of public keys, e.g. trusted_keys=\['fleet.pub'\]"),
    ([], r"trusted_keys is empty: no bundle could ever load"),
    (["/nonexistent/fleet.pub"], r"cannot read the trusted key /nonexistent/fleet.pub \(No such file or directory\)"),
    ([b"not a key"], r"a key given as bytes is not a PEM public key"),
    ([42], r"a trusted key must be a path, PEM bytes or an Ed25519PublicKey, got int"),
])
def test_trusted_keys_given_wrongly(signed, trusted, message):
    with pytest.raises(ConfigError, match=message):
        vledge.load(signed, trusted_keys=trusted)


def test_a_private_key_is_not_a_trusted_key(signed, keys):
    with pytest.raises(ConfigError, match=r"fleet.key is not a PEM public key"):
        vledge.load(signed, trusted_keys=[keys["fleet"][0]])


def test_signing_verifies_the_files_first(signed, keys):
    (signed / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match=r"bundle file tokenizer.json does not match its sha256"):
        sign_bundle(signed, keys["fleet"][0])


def test_without_cryptography_the_extra_is_named(signed, keys, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.setitem(sys.modules, name, None)  # "import cryptography..." now raises ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "vledge\[sign\]"'):
        vledge.load(signed, trusted_keys=[keys["fleet"][1]])


def test_the_cli_keygen_sign_verify(tmp_path):
    bundle = build_bundle(tmp_path / "bundle")
    done = run_vledge("keygen", "--out", tmp_path / "keys")
    assert done.returncode == 0, done.stderr
    assert "key id" in done.stdout and oct(os.stat(tmp_path / "keys" / "vledge-signing.key").st_mode)[-3:] == "600"
    private, public = tmp_path / "keys" / "vledge-signing.key", tmp_path / "keys" / "vledge-signing.pub"
    assert_clean_failure(run_vledge("keygen", "--out", tmp_path / "keys"), "keygen", "already exists")
    assert_clean_failure(run_vledge("verify", bundle, "--trusted-key", public), "verify", "is not signed (no vledge.sig)")
    done = run_vledge("sign", bundle, "--key", private)
    assert done.returncode == 0 and "signed " in done.stdout, done.stderr
    done = run_vledge("verify", bundle, "--trusted-key", public)
    assert done.returncode == 0, done.stderr
    # two towers, the tokenizer, the label set (2) and the self-test probes (4)
    assert "9 files match their sha256; signed by trusted key" in done.stdout
    assert_clean_failure(run_vledge("sign", bundle, "--key", public), "sign", "is not an unencrypted PEM private key")
    (bundle / MANIFEST).write_text((bundle / MANIFEST).read_text().replace('"test": true', '"test": false'))
    assert_clean_failure(run_vledge("verify", bundle, "--trusted-key", public), "verify",
                         "verifies with none of the trusted keys")
