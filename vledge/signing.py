"""Who made a bundle: Ed25519 signatures over the manifest's exact bytes, with the ``cryptography`` package.

The manifest lists every file's sha256, so signing its bytes signs the whole bundle. The signature sits
beside it in ``vledge.sig`` (JSON: algorithm, key id, base64 signature), which the manifest does not list.
What is signed is ``CONTEXT + manifest bytes``: the prefix keeps a signature made for anything else with
the same key from ever passing as a bundle's. Keys are PEM files: PKCS#8 private (mode 0600) and
SubjectPublicKeyInfo public. Install with ``pip install "vledge[sign]"``; nothing here is hand-written crypto.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from vledge.bundle import SIGNATURE
from vledge.errors import ConfigError, UntrustedBundleError, require

CONTEXT = b"vledge bundle manifest v1\n"
SIGNATURE_FORMAT = "vledge-signature"
PRIVATE_SUFFIX, PUBLIC_SUFFIX = ".key", ".pub"


def _crypto():
    """``cryptography``'s Ed25519 and serialization modules, or a MissingDependencyError naming the extra."""
    require("cryptography", "sign")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519, serialization


def key_id(public_key) -> str:
    """A short name for a public key: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    _, serialization = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair(folder: str | os.PathLike, name: str = "vledge-signing") -> tuple[Path, Path]:
    """Write a new Ed25519 key pair as ``folder/name.key`` (private, mode 0600) and ``folder/name.pub``.

    Refuses to replace existing files: a lost private key cannot be recovered, and a replaced one
    would silently orphan every device that trusts the old public key.
    """
    ed25519, serialization = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}{PRIVATE_SUFFIX}", folder / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise ConfigError(f"{path} already exists; choose another --out folder or --name (keys are never replaced)")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(private_path, pem, 0o600)
    _write_new(public_path, public, 0o644)
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never through an existing file or link; the mode is set at creation, before any byte is written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits from the public key's 0644
        os.write(fd, data)
    finally:
        os.close(fd)


def load_private_key(path: str | os.PathLike):
    ed25519, serialization = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the private key {path} ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key ({exc}); make one with vledge keygen") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is a {type(key).__name__}, not an Ed25519 key; make one with vledge keygen")
    return key


def load_public_keys(trusted: Sequence) -> list:
    """Ed25519 public keys from paths to PEM files, PEM bytes, 32 raw bytes, or key objects."""
    ed25519, serialization = _crypto()
    if isinstance(trusted, (str, bytes, os.PathLike)) or not isinstance(trusted, Sequence):
        raise ConfigError("trusted_keys must be a list of public keys, e.g. trusted_keys=['fleet.pub']")
    if not trusted:
        raise ConfigError("trusted_keys is empty: no bundle could ever load; pass the fleet's public keys")
    keys = []
    for item in trusted:
        if isinstance(item, ed25519.Ed25519PublicKey):
            keys.append(item)
            continue
        where = "a key given as bytes"
        try:
            if isinstance(item, (str, os.PathLike)):
                where = str(item)
                data = Path(item).read_bytes()
            elif isinstance(item, bytes):
                data = item
            else:
                raise ConfigError(f"a trusted key must be a path, PEM bytes or an Ed25519PublicKey, got {type(item).__name__}")
            key = (ed25519.Ed25519PublicKey.from_public_bytes(data) if len(data) == 32
                   else serialization.load_pem_public_key(data))
        except OSError as exc:
            raise ConfigError(f"cannot read the trusted key {where} ({exc.strerror})") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where} is not a PEM public key ({exc}); vledge keygen writes one (*.pub)") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"{where} is a {type(key).__name__}, not an Ed25519 public key")
        keys.append(key)
    return keys


def signature_record(manifest_bytes: bytes, private_key) -> dict:
    signature = private_key.sign(CONTEXT + manifest_bytes)
    return {"format": SIGNATURE_FORMAT, "version": 1, "algorithm": "ed25519",
            "key_id": key_id(private_key.public_key()), "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "signature": base64.b64encode(signature).decode("ascii")}


def verify_manifest(manifest_bytes: bytes, signature: bytes, trusted_keys: Sequence, where) -> str:
    """The id of the trusted key whose signature ``signature`` (a ``vledge.sig``'s bytes) is, over these bytes.

    Raises :class:`UntrustedBundleError` when it is malformed or verifies with none of ``trusted_keys``.
    """
    keys = load_public_keys(trusted_keys)
    from cryptography.exceptions import InvalidSignature

    try:
        record = json.loads(signature.decode("utf-8"))
        if not isinstance(record, dict) or record.get("format") != SIGNATURE_FORMAT or record.get("algorithm") != "ed25519" \
                or record.get("version") != 1:
            raise ValueError("not a vledge Ed25519 signature of version 1")
        raw = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UntrustedBundleError(f"{where}/{SIGNATURE} cannot be read ({exc}); sign the bundle again with vledge sign") from None
    # The record's other fields are for people reading it, but a signature file is taken only as written.
    described = record.get("manifest_sha256") == hashlib.sha256(manifest_bytes).hexdigest()
    for key in keys:
        try:
            key.verify(raw, CONTEXT + manifest_bytes)
        except InvalidSignature:
            continue
        if described and record.get("key_id") == key_id(key):
            return key_id(key)
    trusted = ", ".join(key_id(k) for k in keys)
    raise UntrustedBundleError(
        f"the signature of {where} verifies with none of the trusted keys (signed by key id "
        f"{str(record.get('key_id'))[:16]!r}; trusted: {trusted}): its manifest was changed after signing, or it was "
        "signed by a key this device does not trust; refusing to load it"
    )
