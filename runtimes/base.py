"""The runtime backend interface every backend implements, and the registry that names them."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar, Mapping

import numpy as np

from vledge.bundle import BundleManifest
from vledge.registry import did_you_mean
from vledge.errors import BundleError, ConfigError
from vledge.registry import Registry
from vledge.runtimes.isa import TowerChoice, choose_tower_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Port:
    """One input or output of an opened tower, as its framework reports it."""

    name: str
    dtype: str  # numpy dtype name, or the framework's own name for a type numpy lacks
    shape: list | None  # ints for static axes, None for dynamic ones; None: even the rank is dynamic


class Runtime(ABC):
    """Runs the towers of one bundle on one device.

    Subclasses import their framework inside methods only, so that listing or choosing backends
    never loads a framework that will not be used. ``run`` must be safe to call from many threads.
    """

    name: ClassVar[str]
    option_names: ClassVar[frozenset[str]] = frozenset({"threads"})

    def __init__(self, bundle_dir: str | Path, manifest: BundleManifest, device: str, options: dict,
                 strict: bool = False, files: Mapping[str, bytes] | None = None):
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
        # The bundle's files as read (and hash-checked) once by vledge.bundle_files: a backend builds its
        # towers from these bytes and never opens a path, then lets go of them.
        self._files = dict(files or {})

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

    def ports(self, kind: str) -> tuple[list[Port], list[Port]] | None:
        """The opened tower's inputs and outputs as its framework reports them; None where it reports none."""
        return None

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

    def _choose_tower(self, kind: str, on_cpu: bool) -> tuple[str, TowerChoice]:
        """The file to run for ``kind``: its own, or its fallback on a CPU that lacks what it needs."""
        self.check_kind(kind)
        choice = choose_tower_file(kind, self.manifest.towers[kind], on_cpu, self.strict)
        if choice.warning:
            log.warning(choice.warning)
            self.warnings.append(choice.warning)
        self.tower_choices[kind] = choice
        return choice.file, choice

    def _bytes(self, relative: str) -> bytes:
        try:
            return self._files[relative]
        except KeyError:
            raise BundleError(f"{relative} was not read with the bundle; load bundles with vledge.load") from None

    def _beside(self, relative: str) -> dict[str, bytes]:
        """The other files in ``relative``'s folder, by name: what an ONNX graph may name as external data."""
        folder = PurePosixPath(relative).parent
        return {PurePosixPath(rel).name: data for rel, data in self._files.items()
                if PurePosixPath(rel).parent == folder and rel != relative}

    def _done_reading(self) -> None:
        self._files = {}


RUNTIMES: Registry[type[Runtime]] = Registry("runtime backend")


def as_float32(array) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)
