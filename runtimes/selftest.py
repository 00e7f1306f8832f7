"""The self-test on load: run the bundle's probes on the placement chosen and compare with the FP32
student's embeddings recorded at compress time (``compress/bundle/probes.py``).

A tower fails when an embedding is NaN or inf, when a probe's cosine to its reference is under
``MIN_COSINE`` (or the lower value the bundle records for that tower), or when the probes' embeddings
are near-identical to each other: their mean pairwise distance (1 - cosine) under ``MIN_SPREAD`` of the
reference's, the signature of a graph that returns one embedding for every input. A failed tower moves
to the next reachable placement of the target's chain with one warning; ``strict=True`` raises
:class:`~vledge.errors.SelfTestError` instead, and so does a tower that fails everywhere.

Tolerances, from the probes of INT8, FP16, 7- and 8-bit bundles on every placement here and their ISA
fallbacks (benchmarks/selftest_probes.py, docs/design.md): the worst healthy probe measured 0.9973 (the
demo student's NNCF INT8 image tower; the tests' tiny ViT 0.9954), spread ratios 0.93-1.03. A constant
tower's spread is 0 and a NaN tower is not finite, whatever their cosines.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from vledge.bundle import BundleManifest
from vledge.errors import BackendUnavailableError, BundleError, SelfTestError
from vledge.runtimes.model import EdgeModel
from vledge.runtimes.selection import is_reachable
from vledge.runtimes.towers import combine, open_runtime
from vledge.targets import Placement

log = logging.getLogger(__name__)

MIN_COSINE = 0.95
MIN_SPREAD = 0.5  # the probes' pairwise spread, as a share of the reference's
_NO_SPREAD = 1e-4  # a reference spread under this says nothing (identical probes): the check is skipped


@dataclass(frozen=True)
class TowerProbes:
    inputs: object  # uint8 (n, H, W, 3) images, or a list of n texts
    reference: np.ndarray  # (n, dim) float32, L2-normalised
    min_cosine: float


@dataclass(frozen=True)
class TowerCheck:
    kind: str
    placement: str
    passed: bool
    min_cosine: float | None
    spread_ratio: float | None
    seconds: float
    reason: str = ""

    def to_dict(self) -> dict:
        out = {"placement": self.placement, "passed": self.passed, "min_cosine": self.min_cosine,
               "spread_ratio": self.spread_ratio, "seconds": self.seconds}
        return {**out, "reason": self.reason} if self.reason else out


def read_probes(bundle) -> dict[str, TowerProbes]:
    """The probes of the bundle's towers (empty for a bundle written before probes were recorded), from
    the bytes read and checked at load."""
    manifest = bundle.manifest
    probes = {}
    for kind, entry in (manifest.probes or {}).items():
        if kind not in manifest.towers:
            continue
        try:
            reference = np.load(io.BytesIO(bundle[entry["embeddings"]]), allow_pickle=False)
            if kind == "image":
                inputs = np.load(io.BytesIO(bundle[entry["inputs"]]), allow_pickle=False)
                ok = inputs.dtype == np.uint8 and inputs.ndim == 4
            else:
                inputs = json.loads(bundle[entry["inputs"]].decode("utf-8"))
                ok = isinstance(inputs, list) and all(isinstance(t, str) for t in inputs)
            ok = ok and reference.shape == (len(inputs), manifest.embed_dim) and len(inputs) > 0
            min_cosine = float(entry.get("min_cosine", MIN_COSINE))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise BundleError(f"the bundle's {kind} probes cannot be read ({exc}); re-run vledge compress") from None
        if not ok:
            raise BundleError(f"the bundle's {kind} probes do not match their embeddings ({entry['embeddings']}: "
                              f"{reference.shape}, dimension {manifest.embed_dim}); re-run vledge compress")
        probes[kind] = TowerProbes(inputs, reference.astype(np.float32), min_cosine)
    return probes


def spread(embeddings: np.ndarray) -> float:
    """Mean pairwise distance (1 - cosine) between the rows of L2-normalised ``embeddings``."""
    n = len(embeddings)
    if n < 2:
        return 0.0
    cos = embeddings @ embeddings.T
    # The diagonal's n ones cancel its n terms; rounding can take identical rows a hair below zero.
    return max(0.0, float((n * n - cos.sum()) / (n * (n - 1))))


def check_tower(model: EdgeModel, kind: str, probes: TowerProbes, placement: str) -> TowerCheck:
    """Run one tower's probes on ``model`` and judge the result."""
    start = time.perf_counter()
    try:
        with np.errstate(invalid="ignore", over="ignore"):  # inf / inf: judged below, not warned about
            out = model.encode_image(list(probes.inputs)) if kind == "image" else model.encode_text(probes.inputs)
    except Exception as exc:  # a device that cannot run the graph fails the same way as one that runs it wrong
        return TowerCheck(kind, placement, False, None, None, _since(start), f"it raised {type(exc).__name__}: {exc}")
    seconds = _since(start)
    if not np.isfinite(out).all():
        return TowerCheck(kind, placement, False, None, None, seconds, "its embeddings hold NaN or inf")
    cosine = float((out * probes.reference).sum(axis=1).min())
    ref_spread = spread(probes.reference)
    ratio = spread(out) / ref_spread if ref_spread > _NO_SPREAD else None
    reasons = []
    if ratio is not None and ratio < MIN_SPREAD:
        reasons.append(f"its embeddings of {len(out)} different probes are near-identical "
                       f"(spread {ratio:.2f} of the reference's, needs {MIN_SPREAD})")
    if cosine < probes.min_cosine:
        reasons.append(f"a probe's cosine to its reference is {cosine:.4f} (needs {probes.min_cosine})")
    rounded = None if ratio is None else round(ratio, 4)
    return TowerCheck(kind, placement, not reasons, round(cosine, 6), rounded, seconds, "; ".join(reasons))


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 5)


def self_test(
    manifest: BundleManifest,
    by_kind: dict,
    placements: dict[str, Placement],
    tokenizer,
    probes: dict[str, TowerProbes],
    chain: Sequence[Placement],
    available: dict,
    reopen: Callable[[Placement, list[str]], object],
    strict: bool,
) -> tuple[dict, dict[str, Placement], dict, list[str]]:
    """Check every tower that has probes; move a failing one along ``chain`` until it passes.

    ``by_kind`` maps each tower to its runtime and ``placements`` to where it was asked to run;
    ``reopen(placement, kinds)`` opens a runtime for some towers elsewhere. Returns the runtimes and
    placements in use, ``info()["self_test"]`` and the warnings said.
    """
    start = time.perf_counter()
    run = _SelfTestRun(manifest, tokenizer, probes, chain, available, reopen, strict, dict(by_kind), dict(placements))
    pending = [k for k in by_kind if k in probes]
    while pending:
        pending = run.move(run.check(pending))
    report = {
        "ran": bool(run.checks),
        "tolerance": {"min_cosine": {k: p.min_cosine for k, p in probes.items()}, "min_spread_ratio": MIN_SPREAD},
        "towers": {k: c.to_dict() for k, c in run.checks.items()},
        "failures": run.failures,
        "seconds": round(time.perf_counter() - start, 5),
    }
    return run.by_kind, run.placements, report, run.warnings


@dataclass
class _SelfTestRun:
    """The state of one self-test: where each tower runs, where it has been tried, what was found and said."""

    manifest: BundleManifest
    tokenizer: object
    probes: dict[str, TowerProbes]
    chain: Sequence[Placement]
    available: dict
    reopen: Callable[[Placement, list[str]], object]
    strict: bool
    by_kind: dict
    placements: dict[str, Placement]
    tried: dict[str, list[Placement]] = field(default_factory=dict)
    checks: dict[str, TowerCheck] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def check(self, pending: list[str]) -> dict[str, str]:
        """Run the probes of ``pending`` towers where they are; what was said of each that failed."""
        model = EdgeModel(combine(self.manifest, self.by_kind), self.tokenizer, label_set=None, report={})
        to_move = {}
        for kind in pending:
            self.tried.setdefault(kind, [self.placements[kind]])
            check = self.checks[kind] = check_tower(model, kind, self.probes[kind], str(self.placements[kind]))
            if not check.passed:
                self.failures.append({"tower": kind, **check.to_dict()})
                to_move[kind] = f"the {kind} tower failed its self-test on {self.placements[kind]}: {check.reason}"
                if self.strict:
                    raise SelfTestError(
                        f"{to_move[kind]}. strict=True: not falling back (self_test=False skips the check)")
        return to_move

    def move(self, to_move: dict[str, str]) -> list[str]:
        """Reopen each failed tower on its next placement (one warning each); the towers to check again."""
        pending = []
        while to_move:
            groups: dict[Placement, list[str]] = {}
            for kind, said in to_move.items():
                placement = self._next_placement(kind, said)
                self.warnings.append(f"{said}. Falling back to {placement}")
                log.warning(self.warnings[-1])
                self.tried[kind].append(placement)
                groups.setdefault(placement, []).append(kind)
            to_move = {}
            for placement, kinds in groups.items():
                try:
                    runtime = self.reopen(placement, kinds)
                except (BackendUnavailableError, BundleError) as exc:
                    to_move.update((k, f"the {k} tower could not start on {placement}: {exc}") for k in kinds)
                    continue
                self.by_kind.update((k, runtime) for k in kinds)
                self.placements.update((k, placement) for k in kinds)
                pending += kinds
        return pending

    def _next_placement(self, kind: str, said: str) -> Placement:
        for placement in _after(self.chain, self.tried[kind][-1]):
            if placement not in self.tried[kind] and is_reachable(placement, self.available):
                return placement
        raise SelfTestError(
            f"{said}, and no other placement is left to try (tried {', '.join(map(str, self.tried[kind]))}): its "
            "embeddings would be wrong here. Re-run vledge compress for this device, or load with self_test=False "
            "to run it anyway"
        )


def _after(chain: Sequence[Placement], placement: Placement) -> list[Placement]:
    """The chain after ``placement``; all of it when ``placement`` is not in it (a device asked by name)."""
    return list(chain[chain.index(placement) + 1 :]) if placement in chain else list(chain)


def check_on_load(bundle, by_kind: dict, placements: dict[str, Placement], tokenizer,
                  chain: Sequence[Placement], available: dict, options: dict, strict: bool, enabled: bool):
    """``vledge.load``'s self-test step: returns the runtime to use, the towers' placements,
    ``info()["self_test"]`` and the warnings said."""
    root, manifest = bundle.root, bundle.manifest
    if not enabled:
        return combine(manifest, by_kind), placements, {"ran": False, "reason": "self_test=False"}, []
    probes = read_probes(bundle)
    if not probes:
        reason = ("the bundle records no probes (written by hand, or by a vledge compress from before they were "
                  "recorded)")
        log.info("%s: self-test not run: %s", root, reason)
        return combine(manifest, by_kind), placements, {"ran": False, "reason": reason}, []

    def reopen(placement: Placement, kinds: list[str]):
        # The towers' bytes went to the runtimes that built them first: read them again, checked as before.
        return open_runtime(bundle.reread(), placement, kinds, options, strict, tokenizer)

    by_kind, placements, report, warnings = self_test(manifest, by_kind, placements, tokenizer, probes, chain,
                                                      available, reopen, strict)
    return combine(manifest, by_kind), placements, report, warnings
