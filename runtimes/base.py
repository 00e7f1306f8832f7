"""The runtime backend interface every backend implements, and the registry that names them.

A backend is one ``runtimes/<name>_backend.py`` file (found by ``runtimes/discovery.py``) holding a
:class:`Runtime` subclass decorated with :func:`backend`: it declares what selection needs to know about
it (devices, formats, extras, hints) and probes its framework without importing it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar, Mapping, MutableMapping, TypeVar

import numpy as np

from vledge.bundle import BundleManifest
from vledge.bundle_files import tower_files
from vledge.errors import BundleError, ConfigError
from vledge.registry import Registry, did_you_mean
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
    # What the backend declares about itself; selection reads these without importing its framework.
    addressable: ClassVar[tuple[str, ...]]  # devices it can address, spelled as the targets table spells them
    reads: ClassVar[frozenset[str]]  # tower file formats it opens ("onnx", "openvino", ...)
    extra: ClassVar[str]  # the pip extra that brings it
    device_extras: ClassVar[Mapping[str, str]] = {}  # devices that need another extra in its place
    device_hints: ClassVar[Mapping[str, str]] = {}  # what a device needs besides the package (drivers)
    option_names: ClassVar[frozenset[str]] = frozenset({"threads"})

    def __init__(self, bundle_dir: str | Path, manifest: BundleManifest, device: str, options: dict,
                 strict: bool = False, files: MutableMapping[str, bytes] | None = None):
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
        # towers from these bytes and never opens a path. It takes each tower's files out of this mapping (the
        # bundle's own) once the tower is built (``_built``), so the next tower's build does not hold them too.
        self._files = files if files is not None else {}

    @classmethod
    @abstractmethod
    def is_available(cls) -> bool:
        """True when the framework is installed (cheap: does not import it)."""

    @classmethod
    @abstractmethod
    def devices(cls) -> list[str]:
        """The devices this framework can reach on this machine, spelled as the targets table spells them."""

    @classmethod
    def install_hint(cls, device: str) -> str:
        """What to install to reach ``device``: the pip extra, plus drivers where they are needed."""
        hint = f'pip install "vledge[{cls.device_extras.get(device, cls.extra)}]"'
        return f"{hint} ({cls.device_hints[device]})" if device in cls.device_hints else hint

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

    def _built(self, kind: str) -> None:
        """``kind``'s tower is built: its files' bytes (its file, fallback, an IR's weights) are let go."""
        for relative in tower_files(self.manifest.towers[kind]):
            self._files.pop(relative, None)

    def _done_reading(self) -> None:
        self._files = {}


RUNTIMES: Registry[type[Runtime]] = Registry("runtime backend")
_DECLARED = ("name", "addressable", "reads", "extra")
_Backend = TypeVar("_Backend", bound=type[Runtime])


def backend(cls: _Backend) -> _Backend:
    """Class decorator: register a :class:`Runtime` subclass under its ``name``, once it declares its facts."""
    missing = [fact for fact in _DECLARED if not hasattr(cls, fact)]
    if missing:
        raise ConfigError(f"runtime backend {cls.__qualname__} does not declare {', '.join(missing)}; "
                          "set them as class attributes (see vledge.runtimes.base.Runtime)")
    stray = sorted((set(cls.device_extras) | set(cls.device_hints)) - set(cls.addressable))
    if stray:
        raise ConfigError(f"runtime backend {cls.name!r} gives extras or hints for {', '.join(stray)}, "
                          f"which it does not address (it addresses: {', '.join(cls.addressable)})")
    return RUNTIMES.register(cls.name, cls)


def as_float32(array) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)
