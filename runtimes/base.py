"""The runtime backend interface every backend implements, and the registry that names them."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from vledge.bundle import BundleManifest, safe_join
from vledge.registry import did_you_mean
from vledge.errors import ConfigError
from vledge.registry import Registry
from vledge.runtimes.isa import TowerChoice, choose_tower_file

log = logging.getLogger(__name__)


class Runtime(ABC):
    """Runs the towers of one bundle on one device.

    Subclasses import their framework inside methods only, so that listing or choosing backends
    never loads a framework that will not be used. ``run`` must be safe to call from many threads.
    """

    name: ClassVar[str]
    option_names: ClassVar[frozenset[str]] = frozenset({"threads"})

    def __init__(self, bundle_dir: str | Path, manifest: BundleManifest, device: str, options: dict,
                 strict: bool = False):
        unknown = sorted(set(options) - self.option_names)
        if unknown:
            hint = did_you_mean(unknown[0], self.option_names)
            raise ConfigError(
                f"unknown option {unknown[0]!r} for the {self.name} runtime.{hint} "
                f"It takes: {', '.join(sorted(self.option_names))}"
            )
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.device = device
        self.options = dict(options)
        self.strict = strict
        self.tower_choices: dict[str, TowerChoice] = {}
        self.warnings: list[str] = []

    @classmethod
    @abstractmethod
    def is_available(cls) -> bool:
        """True when the framework is installed (cheap: does not import it)."""

    @classmethod
    @abstractmethod
    def devices(cls) -> list[str]:
        """The devices this framework can reach on this machine, spelled as the targets table spells them."""

    @abstractmethod
    def run(self, kind: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the ``"image"`` or ``"text"`` tower; returns unnormalised float32 embeddings (n, dim)."""

    def input_shapes(self, kind: str) -> dict[str, list]:
        """Each input's shape as the tower runs it: ints for fixed axes, strings for dynamic ones."""
        self.check_kind(kind)
        return {t.name: list(t.shape) for t in self.manifest.towers[kind].inputs}

    def info(self) -> dict:
        return {"backend": self.name, "device": self.device, "options": self.options}

    def run_files(self) -> dict[str, dict]:
        """Per tower, the file opened and whether its integer ops run in float (a CPU fallback)."""
        return {kind: {"file": c.file, "float_qdq": c.float_qdq} for kind, c in self.tower_choices.items()}

    def check_kind(self, kind: str) -> None:
        if kind not in self.manifest.towers:
            raise ConfigError(
                f"this bundle has no {kind} tower (it has: {', '.join(sorted(self.manifest.towers))})"
            )

    def _choose_tower(self, kind: str, on_cpu: bool) -> tuple[Path, TowerChoice]:
        """The path to open for ``kind``: its own file, or its fallback on a CPU that lacks what it needs."""
        self.check_kind(kind)
        choice = choose_tower_file(kind, self.manifest.towers[kind], on_cpu, self.strict)
        if choice.warning:
            log.warning(choice.warning)
            self.warnings.append(choice.warning)
        self.tower_choices[kind] = choice
        return safe_join(self.bundle_dir, choice.file), choice


RUNTIMES: Registry[type[Runtime]] = Registry("runtime backend")


def as_float32(array) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)
