"""Choosing where a bundle runs: pure functions over what a machine offers, testable without hardware.

``choose_placement`` walks a target's fallback chain; ``ort_providers`` and ``openvino_device`` turn
one placement into what ONNX Runtime or OpenVINO is asked for.
"""

from __future__ import annotations

from typing import Sequence

from vledge.errors import BackendUnavailableError, ConfigError
from vledge.targets import TARGETS, Placement

# The devices each backend can address, spelled as the targets table spells them.
BACKEND_DEVICES = {
    "onnxruntime": ("cpu", "cuda", "tensorrt"),
    "openvino": ("CPU", "GPU", "NPU"),
    "torch": ("cpu", "cuda"),
}
# The pip extra that brings each backend, and the placements that need a different one.
BACKEND_EXTRA = {"onnxruntime": "onnx", "openvino": "openvino", "torch": "compress"}
PLACEMENT_EXTRA = {("onnxruntime", "cuda"): "gpu", ("onnxruntime", "tensorrt"): "gpu"}
# What a backend needs besides its package to reach a device.
DEVICE_HINT = {
    ("onnxruntime", "cuda"): "onnxruntime-gpu in place of onnxruntime, and the CUDA runtime",
    ("onnxruntime", "tensorrt"): "onnxruntime-gpu in place of onnxruntime, and TensorRT",
    ("openvino", "GPU"): "the Intel GPU driver",
    ("openvino", "NPU"): "the Intel NPU driver",
    ("torch", "cuda"): "a CUDA build of torch and an NVIDIA GPU",
}

ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def install_hint(placement: Placement) -> str:
    """What to install to reach ``placement``: the pip extra, plus drivers where they are needed."""
    key = (placement.backend, placement.device)
    extra = PLACEMENT_EXTRA.get(key, BACKEND_EXTRA.get(placement.backend, placement.backend))
    hint = f'pip install "vledge[{extra}]"'
    if key in DEVICE_HINT:
        hint += f" ({DEVICE_HINT[key]})"
    return hint


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
        known = {d.lower(): d for d in BACKEND_DEVICES.get(backend, ())}
        if dev.lower() not in known:
            raise ConfigError(_unknown_device(device, chain))
        return [Placement(backend, known[dev.lower()])]
    wanted = [p for p in chain if p.device.lower() == device.lower()]
    for backend in dict.fromkeys(p.backend for p in chain):
        for dev in BACKEND_DEVICES.get(backend, ()):
            if dev.lower() == device.lower() and Placement(backend, dev) not in wanted:
                wanted.append(Placement(backend, dev))
    if not wanted:
        raise ConfigError(_unknown_device(device, chain))
    return wanted


def _unknown_device(device: str, chain: Sequence[Placement]) -> str:
    names = sorted({d.lower() for p in chain for d in BACKEND_DEVICES.get(p.backend, ())})
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


def ort_providers(device: str, available_providers: Sequence[str]) -> list[str]:
    """ONNX Runtime execution providers for a device, best first, keeping only those installed."""
    if device not in ORT_PROVIDERS:
        raise ConfigError(f"ONNX Runtime has no device {device!r}; choose one of {sorted(ORT_PROVIDERS)}")
    wanted = ORT_PROVIDERS[device]
    if wanted[0] not in available_providers:
        raise BackendUnavailableError(
            f"ONNX Runtime here has no {wanted[0]} (it has: {', '.join(available_providers)}); "
            f"to use it: {install_hint(Placement('onnxruntime', device))}"
        )
    return [p for p in wanted if p in available_providers]


def openvino_device(device: str, available_devices: Sequence[str]) -> str:
    """The OpenVINO device name for a placement device (``"npu"`` -> ``"NPU"``), if OpenVINO sees it."""
    name = device.upper()
    # OpenVINO numbers devices of a kind ("GPU.0", "GPU.1"); the bare kind name addresses the first.
    if any(d.upper().split(".")[0] == name for d in available_devices):
        return name
    raise BackendUnavailableError(
        f"OpenVINO sees no {name} device (it has: {', '.join(available_devices) or 'none'}); "
        f"to use it: {install_hint(Placement('openvino', name))}"
    )


def normalise_available(devices: Sequence[str]) -> list[str]:
    """OpenVINO device names without their index ("GPU.1" -> "GPU"), unique, in order."""
    return list(dict.fromkeys(d.split(".")[0].upper() for d in devices))


def available_placements(backends: Sequence[str] | None = None) -> set[Placement]:
    """Every placement this machine can reach, probing ``backends`` (default: those the targets use).

    Not pure: it imports each installed framework it probes (torch only when asked for).
    """
    from vledge.runtimes.base import RUNTIMES

    backends = backends or sorted({p.backend for _, spec in TARGETS.items() for p in spec.chain})
    found = set()
    for name in backends:
        runtime = RUNTIMES.get(name)
        if runtime.is_available():
            found |= {Placement(name, device) for device in runtime.devices()}
    return found


# The tower file formats each backend can open.
READS = {"onnxruntime": {"onnx"}, "openvino": {"onnx", "openvino"}, "torch": {"torch"}}


def readable_chain(chain: Sequence[Placement], formats: set[str]) -> tuple[list[Placement], list[Placement]]:
    """Split ``chain`` into the placements whose backend opens every tower format, and the rest."""
    keep = [p for p in chain if formats <= READS.get(p.backend, set())]
    return keep, [p for p in chain if p not in keep]
