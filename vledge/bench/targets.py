"""Issue 5's performance targets, computed as ratios of rows measured side by side in one run.

Each check returns pass / miss with its margin, or n/a with the reason (a row failed or was not run).
Pure functions over the flat rows (``report.flat_row``), so they are tested on given numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vledge.bench.rows import (STUDENT_FP32_ORT, STUDENT_FP32_OV, STUDENT_INT8_ORT, STUDENT_INT8_OV,
                               TEACHER_TORCH)

IMAGE_SPEEDUP = 15.0  # INT8 image tower vs the teacher's PyTorch image tower, batch 1
TEXT_SPEEDUP = 10.0
INT8_THROUGHPUT_GAIN = 2.0  # INT8 vs FP32 of the same student, batch 8, per tower and runtime
TOP1_KEPT = 0.97  # share of the teacher's zero-shot top-1
INT8_DROP_PT = 0.5  # points of top-1 INT8 may lose against the FP32 student
SIZE_RATIO = 20.0  # teacher checkpoint bytes / bundle bytes
MEMORY_FACTOR = 3.0  # peak memory <= factor x bundle size + the backend's baseline
PYTHON_SHARE = 0.15  # Python-side share of batch-1 classify latency (issue 4)

PAIRS = ((STUDENT_INT8_ORT, STUDENT_FP32_ORT, "ONNX Runtime"), (STUDENT_INT8_OV, STUDENT_FP32_OV, "OpenVINO"))


@dataclass
class TargetResult:
    target: str
    subject: str
    value: float | None
    limit: float | None
    unit: str
    higher_is_better: bool
    status: str  # "pass" | "miss" | "n/a"
    margin: str

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        if self.value is None:
            return f"[n/a ] {self.target} ({self.subject}): {self.margin}"
        sign = ">=" if self.higher_is_better else "<="
        return (f"[{self.status.upper():4}] {self.target} ({self.subject}): {_fmt(self.value, self.unit)} "
                f"{sign} {_fmt(self.limit, self.unit)}; {self.margin}")


def _fmt(x: float, unit: str) -> str:
    return f"{x:.1f}{unit}" if unit in ("x", "%") else f"{x:.2f} {unit}"


def check(target: str, subject: str, value, limit: float, unit: str, higher_is_better: bool = True,
          missing: str = "") -> TargetResult:
    """One target: pass when ``value`` is on the right side of ``limit``; the margin in words."""
    if value is None:
        return TargetResult(target, subject, None, limit, unit, higher_is_better, "n/a", missing or "not measured")
    value = float(value)
    ok = value >= limit if higher_is_better else value <= limit
    gap = value - limit if higher_is_better else limit - value  # positive: room to spare
    if unit == "x":
        margin = f"{gap / limit * 100:.0f}% to spare" if ok else (
            f"misses by {-gap / limit * 100:.0f}% (needs {limit / value:.2f}x more)" if value > 0 else "misses")
    else:
        points = "pt" if unit == "%" else unit
        margin = f"{gap:.2f} {points} to spare" if ok else f"misses by {-gap:.2f} {points}"
    return TargetResult(target, subject, value, limit, unit, higher_is_better, "pass" if ok else "miss", margin)


def _get(rows: dict, name: str, key: str):
    row = rows.get(name)
    if row is None or row.get("status") != "ok":
        return None
    return row.get(key)


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _why(rows: dict, *names: str) -> str:
    for name in names:
        row = rows.get(name)
        if row is None:
            return f"no row {name!r}"
        if row.get("status") != "ok":
            return f"{name}: {row.get('status')}"
    return "not measured"


def int8_rows(rows: dict) -> list[str]:
    """The INT8 student rows and every INT8 bundle given, in table order."""
    return [n for n, r in rows.items() if n in (STUDENT_INT8_ORT, STUDENT_INT8_OV)
            or (r.get("role") == "bundle" and "int8" in str(r.get("precision", "")))]


def evaluate_targets(rows: dict, baselines: dict[str, float]) -> list[TargetResult]:
    """Every target over ``rows`` (name -> flat row); ``baselines`` maps a backend to its baseline MB."""
    out: list[TargetResult] = []
    teacher = TEACHER_TORCH
    for name in int8_rows(rows):
        for kind, limit in (("image", IMAGE_SPEEDUP), ("text", TEXT_SPEEDUP)):
            key = f"{kind}_b1_p50_ms"
            out.append(check(f"{kind} tower b1 speed-up over teacher PyTorch FP32", name,
                             _ratio(_get(rows, teacher, key), _get(rows, name, key)), limit, "x",
                             missing=_why(rows, teacher, name)))
    for int8, fp32, runtime in PAIRS:
        if int8 not in rows and fp32 not in rows:
            continue
        for kind, key in (("image", "images_per_s"), ("text", "texts_per_s")):
            out.append(check(f"{kind} tower b8 throughput INT8 / FP32 on {runtime}", int8,
                             _ratio(_get(rows, int8, key), _get(rows, fp32, key)), INT8_THROUGHPUT_GAIN, "x",
                             missing=_why(rows, int8, fp32)))
    for name in int8_rows(rows):
        kept = _ratio(_get(rows, name, "top1"), _get(rows, teacher, "top1"))
        out.append(check("top-1 kept of the teacher's", name, None if kept is None else kept * 100, TOP1_KEPT * 100,
                         "%", missing=_why(rows, teacher, name)))
    for int8, fp32, runtime in PAIRS:
        a, b = _get(rows, fp32, "top1"), _get(rows, int8, "top1")
        if int8 in rows or fp32 in rows:
            out.append(check(f"top-1 lost by INT8 against the FP32 student on {runtime}", int8,
                             None if a is None or b is None else (a - b) * 100, INT8_DROP_PT, "pt",
                             higher_is_better=False, missing=_why(rows, fp32, int8)))
    for name in int8_rows(rows):
        out.append(check("teacher checkpoint size / bundle size", name,
                         _ratio(_get(rows, teacher, "size_mb"), _get(rows, name, "size_mb")), SIZE_RATIO, "x",
                         missing=_why(rows, teacher, name)))
    for name in int8_rows(rows):
        peak, size = _get(rows, name, "peak_rss_mb"), _get(rows, name, "size_mb")
        backend = str(_get(rows, name, "placement") or "").split(":")[0]
        base = baselines.get(backend)
        limit = None if size is None or base is None else MEMORY_FACTOR * size + base
        result = check(f"runtime peak memory <= {MEMORY_FACTOR:g} x bundle + {backend or 'backend'} baseline", name,
                       peak if limit is not None else None, limit or 0.0, "MB", higher_is_better=False,
                       missing=_why(rows, name) if peak is None else f"no {backend or 'backend'} baseline measured")
        out.append(result)
    for name in int8_rows(rows):
        share = _get(rows, name, "classify_overhead_pct")
        out.append(check("Python-side share of b1 classify latency", name, share, PYTHON_SHARE * 100, "%",
                         higher_is_better=False, missing=_why(rows, name)))
    return out
