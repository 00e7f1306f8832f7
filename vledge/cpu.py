"""The CPU's instruction sets, and what they mean for INT8 towers. No torch, no runtime framework.

ONNX Runtime and OpenVINO multiply uint8 activations by int8 weights (U8S8). On x86 CPUs with VNNI
or AMX the products are summed exactly in 32 bits. Without them (AVX2, and AVX-512 before Cascade
Lake) the kernels use ``vpmaddubsw``, which adds two products into a saturating 16-bit sum: with
8-bit weights a pair can reach 2 * 255 * 127 = 64,770 and is clipped at 32,767. 7-bit weights keep
every pair within 2 * 255 * 64 = 32,640, exact on every CPU. ARM kernels widen before they add.

A tower records what it needs in ``requires_isa``; the only requirement is ``"vnni"``: exact 8-bit
integer dot products, which an x86 CPU has with VNNI or AMX and an ARM CPU always has.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

VNNI = "vnni"
REQUIREMENTS = (VNNI,)
# Flags (as /proc/cpuinfo spells them) that give exact 8-bit dot products on x86.
EXACT_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# The flags worth showing a user deciding about INT8, in order.
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
               "asimd", "asimddp", "i8mm")
ARM = ("arm64", "aarch64")


@dataclass(frozen=True)
class CpuInfo:
    """What this machine's CPU offers: its model name, architecture and feature flags."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def is_arm(self) -> bool:
        return self.machine.lower() in ARM

    @property
    def isa(self) -> list[str]:
        """The flags that matter for INT8 inference, in a fixed order."""
        return [f for f in SHOWN_FLAGS if f in self.flags]

    def has(self, requirement: str) -> bool:
        """Whether this CPU meets one ``requires_isa`` entry (an unknown one is never met)."""
        if requirement != VNNI:
            return False
        return self.is_arm or bool(self.flags & set(EXACT_INT8_FLAGS))

    def missing(self, requirements: list[str]) -> list[str]:
        return [r for r in requirements if not self.has(r)]

    def int8_note(self) -> str:
        """One sentence on what INT8 towers do on this CPU."""
        if self.is_arm:
            return "ARM: integer kernels are exact with 7- and 8-bit weights"
        exact = [f for f in EXACT_INT8_FLAGS if f in self.flags]
        if exact:
            return f"{'/'.join(exact)}: exact 8-bit integer dot products; 7- and 8-bit weights both keep their accuracy"
        return ("no VNNI or AMX: U8S8 kernels saturate with 8-bit weights; 7-bit weights (vledge's default) "
                "keep their accuracy, towers that need VNNI fall back")

    def to_dict(self) -> dict:
        return {"model": self.model, "machine": self.machine, "isa": self.isa, "int8": self.int8_note()}


def parse_cpuinfo(text: str, machine: str) -> CpuInfo:
    """A ``CpuInfo`` from the text of ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return CpuInfo(model or machine, machine, frozenset(flags))


# /proc/cpuinfo names -> numpy's names for the same CPUID bits.
_NUMPY_NAMES = {"avx2": "AVX2", "fma": "FMA3", "avx512f": "AVX512F", "avx512bw": "AVX512BW",
                "avx512_vnni": "AVX512VNNI", "avx512_bf16": "AVX512BF16"}


@functools.lru_cache(maxsize=1)
def host_cpu() -> CpuInfo:
    """This machine's CPU (Linux reads ``/proc/cpuinfo``; elsewhere the flags are unknown and empty).

    Flags that numpy's own CPUID probe says this process cannot execute are dropped: under a
    user-mode emulator (QEMU's ``-cpu``) /proc/cpuinfo describes the host, not the emulated CPU.
    """
    machine = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = parse_cpuinfo(fh.read(), machine)
    except OSError:
        return CpuInfo(platform.processor() or machine, machine, frozenset())
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as probed
    except ImportError:  # another numpy layout: keep what /proc/cpuinfo says
        return cpu
    absent = {flag for flag, name in _NUMPY_NAMES.items() if probed.get(name) is False}
    return CpuInfo(cpu.model, cpu.machine, cpu.flags - absent)
