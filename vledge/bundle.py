"""The bundle: one self-describing folder (``vledge.json`` + tower files + tokenizer).

The manifest's dataclasses and their JSON form (every field checked by ``vledge.manifest_checks``);
reading a folder, once and without following links, is ``vledge.bundle_files``. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vledge.errors import BundleError
from vledge.hashing import sha256_file
from vledge.images import PreprocessSpec
from vledge.manifest_checks import check_manifest, is_int
from vledge.text import TokenizerSpec

MANIFEST = "vledge.json"
SIGNATURE = "vledge.sig"  # beside the manifest, never listed in it: it signs the manifest's bytes
# Folders a runtime writes into the bundle by itself (ONNX Runtime's TensorRT engine cache by default).
RUNTIME_FOLDERS = frozenset({".trt_cache"})
FORMAT = "vledge-bundle"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64", ...
    shape: list  # ints, or strings for dynamic axes ("batch", "sequence")


@dataclass(frozen=True)
class TowerSpec:
    file: str  # the file a runtime opens (.onnx, or .xml beside its .bin)
    format: str  # "onnx" | "openvino"
    precision: str  # "fp32" | "fp16" | "int8"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: dict = field(default_factory=dict)
    # What a CPU needs for this tower's integer kernels to keep their accuracy (see vledge.cpu), and
    # what a CPU without it runs instead: {"file": another file of the same tower} or
    # {"float_qdq": true} (run the QDQ graph's integer ops in float), with a "reason".
    requires_isa: list[str] = field(default_factory=list)
    fallback: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TowerSpec":
        return cls(
            file=d["file"],
            format=d["format"],
            precision=d["precision"],
            inputs=[TensorSpec(t["name"], t["dtype"], list(t["shape"])) for t in d["inputs"]],
            outputs=[TensorSpec(t["name"], t["dtype"], list(t["shape"])) for t in d["outputs"]],
            quantization=d.get("quantization", {}),
            requires_isa=list(d["requires_isa"]) if "requires_isa" in d else _legacy_requirement(d),
            fallback=d.get("fallback"),
        )

    @property
    def files(self) -> list[str]:
        """The tower's file and its fallback file, if any (bundle-relative)."""
        return [self.file] + ([self.fallback["file"]] if self.fallback and "file" in self.fallback else [])

    @property
    def static(self) -> bool:
        return all(isinstance(s, int) for t in self.inputs for s in t.shape)


def _legacy_requirement(d: dict) -> list[str]:
    """Bundles written before towers recorded ``requires_isa``: their CPU INT8 towers had 8-bit weights."""
    q = d.get("quantization", {})
    legacy = d.get("precision") == "int8" and "weight_bits" not in q and q.get("method") != "weights-only"
    return ["vnni"] if legacy else []


@dataclass
class BundleManifest:
    target: str
    precision: str
    embed_dim: int
    logit_scale: float
    towers: dict[str, TowerSpec]  # "image", "text"
    preprocess: PreprocessSpec
    tokenizer: TokenizerSpec
    labels: dict | None = None  # {"file": "labels.json", "embeddings": "label_embeddings.npy"}
    # Self-test probes (runtimes/selftest.py): {"image": {"inputs": ..., "embeddings": ...}, "text": {...}, ...}
    probes: dict | None = None
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "target": self.target,
            "precision": self.precision,
            "embed_dim": self.embed_dim,
            "logit_scale": self.logit_scale,
            "towers": {k: asdict(v) for k, v in self.towers.items()},
            "preprocess": self.preprocess.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "labels": self.labels,
            **({"probes": self.probes} if self.probes else {}),
            "config": self.config,
            "metrics": self.metrics,
            "provenance": self.provenance,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BundleManifest":
        """The manifest ``d`` (parsed JSON), every field checked first (``vledge.manifest_checks``)."""
        if not isinstance(d, dict):
            raise BundleError(f"{MANIFEST} must hold a JSON object, not a {type(d).__name__}; re-run vledge compress")
        if d.get("format") != FORMAT:
            raise BundleError(f"not a vledge bundle manifest (format={d.get('format')!r:.80})")
        version = d.get("format_version")
        if not is_int(version) or version != FORMAT_VERSION:
            raise BundleError(
                f"bundle format version {version!r:.80} is not supported by this vledge "
                f"(reads version {FORMAT_VERSION}); re-run vledge compress or upgrade vledge"
            )
        check_manifest(d)
        try:
            return cls(
                target=d["target"],
                precision=d["precision"],
                embed_dim=int(d["embed_dim"]),
                logit_scale=float(d["logit_scale"]),
                towers={k: TowerSpec.from_dict(v) for k, v in d["towers"].items()},
                preprocess=PreprocessSpec.from_dict(d["preprocess"]),
                tokenizer=TokenizerSpec.from_dict(d["tokenizer"]),
                labels=d.get("labels"),
                probes=_probes(d.get("probes")),
                config=d.get("config", {}),
                metrics=d.get("metrics", {}),
                provenance=d.get("provenance", {}),
                files=dict(d.get("files", {})),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:  # checked above: a safety net, not the message users see
            raise BundleError(f"bundle manifest is incomplete or malformed: {exc!r}") from None


def _probes(entry) -> dict | None:
    if entry is not None and not (isinstance(entry, dict) and all(
            isinstance(e, dict) and all(isinstance(e.get(k, ""), str) for k in ("inputs", "embeddings"))
            for e in entry.values())):
        raise BundleError("the manifest's probes entry is malformed; re-run vledge compress")
    return entry


def probe_files(probes: dict | None) -> list[str]:
    """The files a manifest's ``probes`` entry names: each tower's probe inputs and reference embeddings."""
    return [e[key] for e in (probes or {}).values() for key in ("inputs", "embeddings") if key in e]


def safe_join(root: Path, relative: str) -> Path:
    """Resolve ``relative`` inside ``root``; refuse absolute paths and escapes such as ``../``."""
    if not relative or os.path.isabs(relative) or Path(relative).drive:
        raise BundleError(f"bundle path {relative!r} must be relative to the bundle folder")
    resolved = (root / relative).resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise BundleError(f"bundle path {relative!r} points outside the bundle folder")
    return resolved


def write_manifest(folder: str | os.PathLike, manifest: BundleManifest) -> Path:
    """Hash every file in ``folder`` (except the manifest, its signature and a runtime's cache) into the
    manifest and write it."""
    root = Path(folder)
    manifest.files = {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in (MANIFEST, SIGNATURE)
        and p.relative_to(root).parts[0] not in RUNTIME_FOLDERS
    }
    path = root / MANIFEST
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def folder_fingerprint(*folders: str | os.PathLike) -> str:
    """sha256 over the names and contents of every file in ``folders`` (a teacher's identity)."""
    digest = hashlib.sha256()
    for folder in folders:
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()
