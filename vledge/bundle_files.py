"""Reading a bundle folder as a device should: every file read once, through the folder, never through a link.

``read_bundle`` opens the folder once and every file relative to it without following symbolic links
(``O_NOFOLLOW`` on each path component), refuses anything the manifest does not list, reads each listed
file once, checks its sha256 and keeps the bytes. Runtimes, numpy and tokenizers are handed those bytes,
never a path: a file swapped after its check is never run, and nothing outside the folder is opened.
No torch, no runtime framework.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from vledge.bundle import MANIFEST, RUNTIME_FOLDERS, SIGNATURE, BundleManifest, TowerSpec, probe_files
from vledge.errors import BundleError, ConfigError, UntrustedBundleError

MAX_MANIFEST_BYTES = 16 << 20  # read before anything vouches for it: a bound, far above any real manifest
MAX_SIGNATURE_BYTES = 64 << 10
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO never hangs the open
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class BundleFiles:
    """A bundle as read once: its manifest (and that manifest's exact bytes) and every listed file's bytes."""

    root: Path
    manifest: BundleManifest
    manifest_bytes: bytes
    # bundle-relative path -> bytes, each matching its sha256. A runtime takes a tower's files out as it builds
    # the tower (vledge.runtimes.base.Runtime), so that no copy outlives the build; ``reread`` gives them again.
    contents: dict[str, bytes]
    signed_by: str | None = None  # the id of the trusted key whose signature was verified

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    def reread(self) -> BundleFiles:
        """The bundle read again, every file checked against this manifest's exact bytes (so against the
        signature or pin checked on them): for a tower built again after its bytes were let go."""
        try:
            return read_bundle(self.root, manifest_sha256=self.manifest_sha256)
        except UntrustedBundleError:
            raise BundleError(f"{self.root / MANIFEST} changed while the bundle was loading; load it again") from None

    def __getitem__(self, relative: str) -> bytes:
        try:
            return self.contents[relative]
        except KeyError:
            raise BundleError(f"{relative} is used by the bundle but has no sha256 in {MANIFEST}") from None


def read_bundle(folder: str | os.PathLike, *, verify: bool = True, trusted_keys: Sequence | None = None,
                manifest_sha256: str | None = None) -> BundleFiles:
    """Read the bundle at ``folder``: its manifest, and with ``verify`` every file it lists, hash-checked.

    ``manifest_sha256`` pins the manifest's exact bytes; ``trusted_keys`` (Ed25519 public keys, see
    :mod:`vledge.signing`) requires ``vledge.sig`` to sign them. Both are checked on the manifest's bytes
    before they are parsed, and so before any file is read or any runtime opens anything; a failure is an
    :class:`~vledge.errors.UntrustedBundleError`.
    """
    root = Path(folder)
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise BundleError(f"bundle folder not found: {root}") from None
    except OSError as exc:
        raise BundleError(f"cannot open the bundle folder {root} ({exc.strerror})") from None
    try:
        manifest_bytes = _read(dir_fd, root, MANIFEST, MAX_MANIFEST_BYTES, missing=(
            f"{root} has no {MANIFEST}: not a vledge bundle (make one with vledge compress)"))
        signed_by = _check_trust(dir_fd, root, manifest_bytes, trusted_keys, manifest_sha256)
        manifest = BundleManifest.from_dict(parse_json(manifest_bytes, root / MANIFEST))
        paths = _referenced(manifest)
        for rel in list(manifest.files) + paths:
            split_path(rel)
        for rel in paths:
            if rel not in manifest.files:
                raise BundleError(f"{rel} is used by the bundle but has no sha256 in {MANIFEST}")
        contents = {}
        if verify:
            _check_listing(dir_fd, root, set(manifest.files))
            for rel, expected in manifest.files.items():
                data = _read(dir_fd, root, rel, missing=f"bundle file {rel} is missing from {root}; re-run vledge compress")
                if hashlib.sha256(data).hexdigest() != expected:
                    raise BundleError(
                        f"bundle file {rel} does not match its sha256 in {MANIFEST}: "
                        "it was changed after export; refusing to load it"
                    )
                contents[rel] = data
    finally:
        os.close(dir_fd)
    return BundleFiles(root, manifest, manifest_bytes, contents, signed_by)


def read_manifest(folder: str | os.PathLike, verify: bool = True) -> BundleManifest:
    """Read ``vledge.json``; with ``verify``, check the folder holds only listed files, each matching its sha256
    (see :func:`read_bundle`, which also keeps the bytes it read)."""
    return read_bundle(folder, verify=verify).manifest


def parse_json(data: bytes, where) -> object:
    """``data`` as JSON; malformed, non-UTF-8 or absurdly nested JSON is a BundleError naming ``where``."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{where} is not valid JSON: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise BundleError(f"{where} is not valid JSON for vledge: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise BundleError(f"{where} is not valid JSON: {exc}") from None


def split_path(relative) -> list[str]:
    """The components of a bundle-relative path; absolute paths, ``..`` and empty components are refused."""
    if not isinstance(relative, str) or not relative:
        raise BundleError(f"bundle path {relative!r:.80} must be a non-empty relative path")
    if relative.startswith("/") or "\\" in relative or "\0" in relative:
        raise BundleError(f"bundle path {relative!r:.80} must be relative to the bundle folder")
    parts = PurePosixPath(relative).parts
    if ".." in parts:
        raise BundleError(f"bundle path {relative!r:.80} points outside the bundle folder")
    if "." in relative.split("/") or "" in relative.split("/"):
        raise BundleError(f"bundle path {relative!r:.80} must be written plainly (no '.' or empty components)")
    return list(parts)


def openvino_weights(xml: str) -> str:
    """The ``.bin`` OpenVINO reads beside an IR ``.xml``."""
    if not xml.endswith(".xml"):
        raise BundleError(f"the OpenVINO tower file {xml!r:.80} must be an IR .xml (beside its .bin weights)")
    return xml[: -len(".xml")] + ".bin"


def tower_files(tower: TowerSpec) -> list[str]:
    """The files a tower is built from: its file and fallback, and an IR's .bin beside each."""
    return [f for file in tower.files for f in ([file, openvino_weights(file)] if tower.format == "openvino" else [file])]


def _referenced(manifest: BundleManifest) -> list[str]:
    """Every file the bundle uses, including those a runtime would open by itself (an IR's .bin)."""
    paths = [manifest.tokenizer.file]
    for tower in manifest.towers.values():
        paths += tower_files(tower)
    if manifest.labels:
        paths += [manifest.labels["file"], manifest.labels["embeddings"]]
    return paths + probe_files(manifest.probes)


def _check_trust(dir_fd: int, root: Path, manifest_bytes: bytes, trusted_keys, manifest_sha256) -> str | None:
    if manifest_sha256 is not None:
        if not isinstance(manifest_sha256, str) or len(manifest_sha256) != 64:
            raise ConfigError(f"manifest_sha256 must be 64 hex digits (vledge verify prints it), got {manifest_sha256!r:.80}")
        actual = hashlib.sha256(manifest_bytes).hexdigest()
        if actual != manifest_sha256.lower():
            raise UntrustedBundleError(
                f"{root / MANIFEST} has sha256 {actual}, not the pinned {manifest_sha256.lower()}: this is not the "
                "bundle you pinned; refusing to load it"
            )
    if trusted_keys is None:
        return None
    from vledge.signing import load_public_keys, verify_manifest

    load_public_keys(trusted_keys)  # a caller's mistake (no keys, a wrong path) before a bundle's

    signature = _read(dir_fd, root, SIGNATURE, MAX_SIGNATURE_BYTES, missing=(
        f"{root} is not signed (no {SIGNATURE}) and this load trusts only bundles signed by its trusted keys; "
        "sign it with: vledge sign BUNDLE --key PRIVATE_KEY"), untrusted=True)
    return verify_manifest(manifest_bytes, signature, trusted_keys, where=root)


def _read(dir_fd: int, root: Path, relative: str, limit: int | None = None, *, missing: str,
          untrusted: bool = False) -> bytes:
    """The bytes of ``relative`` under ``dir_fd``: a regular file reached without following any link."""
    error = UntrustedBundleError if untrusted else BundleError
    fd = _open(dir_fd, root, relative, missing, error)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{relative} in {root} is not a regular file (a folder, FIFO or device); "
                              "a bundle holds only regular files")
        if limit is not None and info.st_size > limit:
            raise error(f"{relative} in {root} is {info.st_size} bytes, more than the {limit} a {relative} may be")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read(limit + 1 if limit is not None else -1)
        if limit is not None and len(data) > limit:
            raise error(f"{relative} in {root} grew past {limit} bytes while it was read")
        return data
    finally:
        if fd >= 0:
            os.close(fd)


def _open(dir_fd: int, root: Path, relative: str, missing: str, error) -> int:
    parts = split_path(relative)
    fds = []
    try:
        current = dir_fd
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            current = os.open(part, _OPEN_FILE if last else _OPEN_DIR, dir_fd=current)
            if not last:
                fds.append(current)
        return current
    except FileNotFoundError:
        raise error(missing) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a link (or a file where a folder was)
            raise BundleError(_link_message(root, relative)) from None
        raise BundleError(f"cannot read {relative} in {root} ({exc.strerror})") from None
    finally:
        for fd in fds:
            os.close(fd)


def _link_message(root: Path, relative: str) -> str:
    return (f"{relative} in {root} is a symbolic link (or passes through one): a bundle holds only regular files, "
            "since a link can point anywhere; replace it with the file itself or re-run vledge compress")


def _check_listing(dir_fd: int, root: Path, listed: set[str]) -> None:
    """Refuse links, special files and files the manifest does not list, anywhere in the folder."""
    allowed = listed | {MANIFEST, SIGNATURE}
    folders = {str(PurePosixPath(p).parent) for p in listed} - {"."}
    folders |= {str(parent) for p in folders for parent in PurePosixPath(p).parents} - {"."}

    def scan(fd: int, prefix: str) -> None:
        with os.scandir(fd) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_symlink():
                    raise BundleError(_link_message(root, rel))
                if entry.is_dir(follow_symlinks=False):
                    if not prefix and entry.name in RUNTIME_FOLDERS:
                        continue
                    if rel not in folders:
                        raise BundleError(_unlisted(root, rel + "/"))
                    sub = os.open(entry.name, _OPEN_DIR, dir_fd=fd)
                    try:
                        scan(sub, rel + "/")
                    finally:
                        os.close(sub)
                elif not entry.is_file(follow_symlinks=False):
                    raise BundleError(f"{rel} in {root} is not a regular file (a FIFO, socket or device); "
                                      "a bundle holds only regular files")
                elif rel not in allowed:
                    raise BundleError(_unlisted(root, rel))

    scan(dir_fd, "")


def _unlisted(root: Path, rel: str) -> str:
    return (f"{root} holds {rel}, which {MANIFEST} does not list: a runtime could read it unchecked; "
            "remove it, or re-run vledge compress to list it")
