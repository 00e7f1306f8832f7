"""Per-tower placement: each tower where it runs best, e.g. the image tower on an NPU or GPU and the
text tower on the CPU (what Frigate and Hailo's CLIP application do).

Towers asked to run on different placements get one runtime each, opened on a copy of the manifest
that lists only their towers; :class:`TowerRuntimes` routes ``run(kind, feeds)`` to the tower's own.
Where every tower shares a placement, one runtime runs both, as before.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vledge.bundle import BundleManifest
from vledge.errors import BackendUnavailableError
from vledge.runtimes.base import RUNTIMES, Runtime
from vledge.runtimes.selection import choose_placement
from vledge.targets import Placement


def tower_requests(towers, device: str, image_device: str | None, text_device: str | None) -> dict[str, str]:
    """The device asked for each of ``towers``: its own (``image_device``, ``text_device``) or ``device``."""
    own = {"image": image_device, "text": text_device}
    return {kind: own.get(kind) or device for kind in towers}


def choose_tower_placements(chain: Sequence[Placement], available: dict, requests: dict[str, str],
                            strict: bool) -> tuple[dict[str, Placement], list[str]]:
    """Each tower's placement, chosen by :func:`choose_placement` from its requested device, and the warnings.

    An unreachable tower device falls back along the chain like the whole model's (one warning, naming
    the towers when they were asked for different devices), or raises when ``strict``.
    """
    chosen, warnings = {}, []
    split = len(set(requests.values())) > 1
    for device in dict.fromkeys(requests.values()):
        kinds = [k for k, d in requests.items() if d == device]
        placement, said = choose_placement(chain, available, device, strict)
        warnings += [f"the {' and '.join(kinds)} tower: {w}" if split else w for w in said]
        chosen.update((k, placement) for k in kinds)
    return chosen, warnings


def open_runtime(bundle, placement: Placement, kinds: Sequence[str], options: dict, strict: bool,
                 tokenizer=None) -> Runtime:
    """A runtime for ``kinds`` of the bundle's towers on ``placement``, over the bytes read at load;
    with ``tokenizer``, its towers are checked against the manifest (``runtimes/tower_checks.py``)."""
    from vledge.runtimes.tower_checks import check_towers

    manifest = bundle.manifest
    if set(kinds) != set(manifest.towers):
        manifest = dataclasses.replace(manifest, towers={k: manifest.towers[k] for k in kinds})
    cls = RUNTIMES.get(placement.backend)
    runtime = cls(bundle.root, manifest, placement.device, options_for(cls, options), strict=strict,
                  files=bundle.contents)
    if strict and runtime.device.lower() != placement.device.lower():
        raise BackendUnavailableError(
            f"{placement} was listed but could not start (running on {runtime.device}); strict=True: not falling back"
        )
    if tokenizer is not None:
        check_towers(runtime, tokenizer)
    return runtime


def options_for(cls, options: dict) -> dict:
    """The options a backend gets: those it takes, less those only other backends take (``exact`` for
    OpenVINO, when a tower runs on, or falls back to, ONNX Runtime); names no backend knows still go
    through, to be refused with a "did you mean"."""
    others = {name for _, other in RUNTIMES.items() for name in other.option_names}
    return {k: v for k, v in options.items() if k in cls.option_names or k not in others}


def open_runtimes(bundle, placements: dict[str, Placement], options: dict, strict: bool) -> dict[str, Runtime]:
    """Tower -> runtime: one runtime per distinct placement, shared by the towers placed there (unchecked:
    ``runtimes/tower_checks.py`` checks them)."""
    groups: dict[Placement, list[str]] = {}
    for kind, placement in placements.items():
        groups.setdefault(placement, []).append(kind)
    by_kind = {}
    for placement, kinds in groups.items():
        runtime = open_runtime(bundle, placement, kinds, options, strict)
        by_kind.update((k, runtime) for k in kinds)
    return by_kind


def combine(manifest: BundleManifest, by_kind: dict[str, Runtime]):
    """The one runtime every tower shares, or a :class:`TowerRuntimes` over theirs."""
    distinct = list({id(r): r for r in by_kind.values()}.values())
    return distinct[0] if len(distinct) == 1 else TowerRuntimes(manifest, by_kind)


class TowerRuntimes:
    """Runs each tower on its own runtime; offers what :class:`EdgeModel` uses of a :class:`Runtime`."""

    def __init__(self, manifest: BundleManifest, by_kind: dict[str, Runtime]):
        self.manifest = manifest
        self.runtimes = dict(by_kind)
        self._distinct = list({id(r): r for r in by_kind.values()}.values())
        self.name = "+".join(r.name for r in self._distinct)
        self.device = "+".join(r.device for r in self._distinct)
        self.options = self._distinct[0].options

    @property
    def warnings(self) -> list[str]:
        return [w for r in self._distinct for w in r.warnings]

    def check_kind(self, kind: str) -> None:
        Runtime.check_kind(self, kind)  # the same message as a single runtime's

    def run(self, kind: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.check_kind(kind)
        return self.runtimes[kind].run(kind, feeds)

    def input_shapes(self, kind: str) -> dict[str, list]:
        self.check_kind(kind)
        return self.runtimes[kind].input_shapes(kind)

    def run_files(self) -> dict[str, dict]:
        return {k: v for r in self._distinct for k, v in r.run_files().items()}

    def info(self) -> dict:
        merged = {}
        for runtime in self._distinct:  # backend-specific keys (providers, inference_precision) do not collide
            for key, value in runtime.info().items():
                merged[key] = {**merged[key], **value} if isinstance(value, dict) and key in merged else value
        return {**merged, "backend": self.name, "device": self.device}


def tower_placement(runtime, kind: str) -> dict:
    """Where ``kind`` runs: ``{"placement": "backend:device", "backend", "device"}``."""
    own = runtime.runtimes[kind] if isinstance(runtime, TowerRuntimes) else runtime
    return {"placement": f"{own.name}:{own.device}", "backend": own.name, "device": own.device}


def describe(placements: dict[str, Placement]) -> str:
    """``"openvino:NPU"`` when the towers share it, else ``"openvino:NPU (image) + onnxruntime:cpu (text)"``."""
    distinct = set(placements.values())
    if len(distinct) == 1:
        return str(next(iter(distinct)))
    return " + ".join(f"{p} ({kind})" for kind, p in placements.items())
