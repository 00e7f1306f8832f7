"""Choosing where a bundle runs: functions over what a machine offers, testable without hardware.

``choose_placement`` walks a target's fallback chain. What each backend can address, read and needs
installed comes from the backend itself (its class attributes, see ``runtimes/base.py``); nothing here
names a backend.
"""

from __future__ import annotations

from typing import Sequence

from vledge.errors import BackendUnavailableError, ConfigError
from vledge.runtimes.base import RUNTIMES
from vledge.targets import TARGETS, Placement


def addressable(backend: str) -> tuple[str, ...]:
    """The devices ``backend`` can address; none for a name no backend registered."""
    return RUNTIMES.get(backend).addressable if backend in RUNTIMES else ()


def install_hint(placement: Placement) -> str:
    """What to install to reach ``placement``: the pip extra, plus drivers where they are needed."""
    if placement.backend not in RUNTIMES:
        return f'pip install "vledge[{placement.backend}]"'
    return RUNTIMES.get(placement.backend).install_hint(placement.device)


def is_reachable(placement: Placement, available: dict[str, Sequence[str]]) -> bool:
    devices = available.get(placement.backend)
    return devices is not None and placement.device.lower() in {d.lower() for d in devices}


def _why_not(placement: Placement, available: dict[str, Sequence[str]]) -> str:
    devices = available.get(placement.backend)
    if devices is None:
        return f"{placement.backend} is not installed"
    return f"{placement.backend} sees no {placement.device} device (it has: {', '.join(devices) or 'none'})"


def requested_placements(chain: Sequence[Placement], device: str) -> list[Placement]:
    """The placements a device name asks for: those of the chain first, then the chain's other backends."""
    if ":" in device:
        backend, dev = device.split(":", 1)
        known = {d.lower(): d for d in addressable(backend)}
        if dev.lower() not in known:
            raise ConfigError(_unknown_device(device, chain))
        return [Placement(backend, known[dev.lower()])]
    wanted = [p for p in chain if p.device.lower() == device.lower()]
    for backend in dict.fromkeys(p.backend for p in chain):
        for dev in addressable(backend):
            if dev.lower() == device.lower() and Placement(backend, dev) not in wanted:
                wanted.append(Placement(backend, dev))
    if not wanted:
        raise ConfigError(_unknown_device(device, chain))
    return wanted


def _unknown_device(device: str, chain: Sequence[Placement]) -> str:
    names = sorted({d.lower() for p in chain for d in addressable(p.backend)})
    return (
        f"device {device!r} cannot run this bundle; choose 'auto' or one of: {', '.join(names)} "
        "(or 'backend:device', e.g. 'openvino:GPU')"
    )


def choose_placement(
    chain: Sequence[Placement],
    available: dict[str, Sequence[str]],
    requested_device: str = "auto",
    strict: bool = False,
) -> tuple[Placement, list[str]]:
    """Pick the placement to run on, and the warnings to log (at most one).

    ``chain`` is the target's fallback chain, preferred first. ``available`` maps each installed
    backend to the devices it can reach here; a backend missing from it is not installed.
    ``requested_device`` is ``"auto"`` (the chain's first reachable placement), a device name
    (``"cpu"``, ``"cuda"``, ``"tensorrt"``, ``"GPU"``, ``"NPU"``; any case) or ``"backend:device"``.

    If the wanted placement is unreachable, the chain after it is tried and one warning says so;
    with ``strict`` a :class:`BackendUnavailableError` is raised instead, naming what to install.
    """
    if not chain:
        raise ConfigError("the target has an empty fallback chain")
    if requested_device == "auto":
        wanted, fallbacks = [chain[0]], list(chain[1:])
    else:
        wanted = requested_placements(chain, requested_device)
        # Fall back along the chain after the requested placement; from its start if it is not in it.
        last = max((chain.index(p) for p in wanted if p in chain), default=-1)
        fallbacks = [p for p in chain[last + 1 :] if p not in wanted]
    for placement in wanted:
        if is_reachable(placement, available):
            return placement, []
    first = wanted[0]
    reason = f"{first} is not available here: {_why_not(first, available)}; to use it: {install_hint(first)}"
    if strict:
        raise BackendUnavailableError(f"{reason}. strict=True: not falling back")
    for placement in fallbacks:
        if is_reachable(placement, available):
            return placement, [f"{reason}. Falling back to {placement}"]
    tried = ", ".join(str(p) for p in [*wanted, *fallbacks])
    hints = "; ".join(f"{p}: {install_hint(p)}" for p in [*wanted, *fallbacks])
    raise BackendUnavailableError(f"no runtime can run this bundle here (tried {tried}). Install one of: {hints}")


def available_devices(backends: Sequence[str]) -> dict[str, list[str]]:
    """The devices each installed one of ``backends`` reaches here; a backend not installed is left out.

    Not pure: it imports the framework of each installed backend it probes.
    """
    found = {}
    for name in sorted(backends):
        runtime = RUNTIMES.get(name)
        if runtime.is_available():
            found[name] = runtime.devices()
    return found


def available_placements(backends: Sequence[str] | None = None) -> set[Placement]:
    """Every placement this machine can reach, probing ``backends`` (default: those the targets use).

    Not pure: it imports each installed framework it probes (torch only when asked for).
    """
    backends = backends or sorted({p.backend for _, spec in TARGETS.items() for p in spec.chain})
    return {Placement(name, device) for name, devices in available_devices(backends).items() for device in devices}


def readable_chain(chain: Sequence[Placement], formats: set[str]) -> tuple[list[Placement], list[Placement]]:
    """Split ``chain`` into the placements whose backend opens every tower format, and the rest."""
    keep = [p for p in chain if p.backend in RUNTIMES and formats <= RUNTIMES.get(p.backend).reads]
    return keep, [p for p in chain if p not in keep]
