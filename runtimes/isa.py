"""Which file of a tower a CPU runs: the tower's own, or its fallback where the CPU lacks what the
tower's integer kernels need to keep their accuracy (``TowerSpec.requires_isa``, see ``vledge.cpu``)."""

from __future__ import annotations

from dataclasses import dataclass

from vledge.bundle import TowerSpec
from vledge.cpu import CpuInfo, host_cpu
from vledge.errors import BackendUnavailableError


@dataclass(frozen=True)
class TowerChoice:
    file: str  # bundle-relative file to open
    float_qdq: bool = False  # run a QDQ graph's integer ops in float
    warning: str | None = None  # said once at load when the tower's own file is not run as recorded


def choose_tower_file(kind: str, spec: TowerSpec, on_cpu: bool, strict: bool, cpu: CpuInfo | None = None) -> TowerChoice:
    """The file to open for ``spec`` on this machine.

    Requirements concern CPU placements only. Where the CPU lacks one, the tower's fallback is used
    with a warning; ``strict`` raises :class:`BackendUnavailableError` instead.
    """
    if not on_cpu or not spec.requires_isa:
        return TowerChoice(spec.file)
    cpu = cpu or host_cpu()
    missing = cpu.missing(spec.requires_isa)
    if not missing:
        return TowerChoice(spec.file)
    reason = (
        f"the {kind} tower {spec.file} needs {', '.join(missing)} for its INT8 kernels to keep their accuracy, "
        f"and this CPU ({cpu.model}; {', '.join(cpu.isa) or 'no flags known'}) has none"
    )
    if strict:
        raise BackendUnavailableError(f"{reason}; strict=True: not falling back")
    fallback = spec.fallback or {}
    if "file" in fallback:
        return TowerChoice(fallback["file"], warning=f"{reason}; running its fallback {fallback['file']} "
                                                     f"({fallback.get('reason', 'no reason recorded')})")
    if fallback.get("float_qdq") and spec.format == "onnx":
        return TowerChoice(spec.file, float_qdq=True,
                           warning=f"{reason}; running its integer ops in float (slower, same results)")
    return TowerChoice(spec.file, warning=(
        f"{reason}, and the bundle has no fallback for it: its embeddings may be wrong here. "
        "Re-compress with the quantize config's weight_bits=7 (the default), which needs nothing"
    ))
