"""Budgets the user sets over the benchmark's row keys, checked on every bundle row, and the derived
columns they may name (how a row compares with the teacher and with the best peer).

``vledge bench BUNDLE --require "image_b1_p50_ms<=5,top1_kept>=0.97"``: each budget is ``KEY<=NUMBER``,
``KEY>=NUMBER``, ``KEY<NUMBER`` or ``KEY>NUMBER``; a bundle row meets it when its value is on the
right side; a value that was not measured misses. Pure functions over flat rows (``report.flat_row``).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from vledge.errors import ConfigError
from vledge.registry import did_you_mean

OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
PEER_CELLS = ("image_b1", "image_b8", "text_b1", "text_b8")
DERIVED = ("top1_kept", "size_ratio", *(f"vs_peer_{cell}" for cell in PEER_CELLS), "vs_peer_top1_pt")
_BUDGET = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*([^\s<>=]+)\s*$")
EXAMPLE = "image_b1_p50_ms<=5,top1_kept>=0.97"


@dataclass(frozen=True)
class Budget:
    key: str
    op: str
    limit: float

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.limit:g}"


@dataclass(frozen=True)
class BudgetResult:
    row: str
    budget: Budget
    value: float | None
    status: str  # "pass" | "miss"
    why: str = ""  # for a value that was not measured

    def line(self) -> str:
        b = self.budget
        if self.value is None:
            return f"[MISS] {self.row}: {b.key} {b.op} {b.limit:g}: not measured ({self.why})"
        return f"[{self.status.upper()}] {self.row}: {b.key} {_fmt(self.value)} {b.op} {b.limit:g}"

    def to_dict(self) -> dict:
        return {"row": self.row, "budget": str(self.budget), "value": self.value, "status": self.status,
                "line": self.line()}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def parse_budgets(text: str, known: tuple[str, ...]) -> list[Budget]:
    """``"KEY<=NUMBER,KEY>=NUMBER"`` as budgets; ``known``: the keys a budget may name.

    Raises ConfigError naming the part that cannot be read, or the unknown key with a suggestion."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"--require is empty; give budgets such as {EXAMPLE!r}")
    budgets = []
    for part in parts:
        match = _BUDGET.match(part)
        if not match:
            raise ConfigError(f"--require: cannot read {part.strip()!r}: write KEY<=NUMBER, KEY>=NUMBER, KEY<NUMBER "
                              f"or KEY>NUMBER, comma-separated (e.g. {EXAMPLE!r})")
        key, op, number = match.groups()
        if key not in known:
            raise ConfigError(f"--require: unknown key {key!r}.{did_you_mean(key, known)} Keys: {', '.join(known)}")
        try:
            limit = float(number)
        except ValueError:
            limit = math.nan
        if not math.isfinite(limit):
            raise ConfigError(f"--require: {part.strip()!r}: {number!r} is not a finite number")
        budgets.append(Budget(key, op, limit))
    return budgets


def check_budgets(rows: list[dict], budgets: list[Budget]) -> list[BudgetResult]:
    """Every budget on every bundle row, in table order."""
    out = []
    for row in rows:
        if row.get("role") != "bundle":
            continue
        for budget in budgets:
            value = row.get(budget.key) if row.get("status") == "ok" else None
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                why = row.get("status") if row.get("status") != "ok" else "the row has no value for it"
                out.append(BudgetResult(row["name"], budget, None, "miss", str(why)))
                continue
            passed = OPERATORS[budget.op](float(value), budget.limit)
            out.append(BudgetResult(row["name"], budget, float(value), "pass" if passed else "miss"))
    return out


def _ok(row: dict, key: str):
    value = row.get(key) if row.get("status") == "ok" else None
    return value if isinstance(value, (int, float)) and value > 0 else None


def best_peers(rows: list[dict]) -> dict[str, tuple[str, float]]:
    """Per tower and batch (and ``top1``), the best peer row: its name and value (lowest ms, highest top-1)."""
    peers = [r for r in rows if r.get("role") == "peer"]
    best = {}
    for cell in PEER_CELLS:
        timed = [(r["name"], _ok(r, f"{cell}_p50_ms")) for r in peers]
        timed = [t for t in timed if t[1] is not None]
        if timed:
            best[cell] = min(timed, key=lambda t: t[1])
    scored = [(r["name"], r["top1"]) for r in peers if r.get("status") == "ok" and r.get("top1") is not None]
    if scored:
        best["top1"] = max(scored, key=lambda t: t[1])
    return best


def add_derived(rows: list[dict], teacher_size_mb: float | None) -> None:
    """Add ``top1_kept`` (of the first teacher row's top-1) and ``size_ratio`` (teacher checkpoint bytes
    over the row's) to every student and bundle row, and the ``vs_peer_*`` columns: speed-up over the
    best peer per tower and batch, and top-1 minus the best peer's top-1 in points."""
    teacher = next((r for r in rows if r.get("role") == "teacher" and _ok(r, "top1")), None)
    best = best_peers(rows)
    for row in rows:
        if row.get("role") not in ("student", "bundle"):
            continue
        for key in DERIVED:
            row[key] = None
        if row.get("status") != "ok":
            continue
        if teacher is not None and row.get("top1") is not None:
            row["top1_kept"] = row["top1"] / teacher["top1"]
        if teacher_size_mb and _ok(row, "size_mb"):
            row["size_ratio"] = teacher_size_mb / row["size_mb"]
        for cell in PEER_CELLS:
            mine = _ok(row, f"{cell}_p50_ms")
            if cell in best and mine:
                row[f"vs_peer_{cell}"] = best[cell][1] / mine
        if "top1" in best and row.get("top1") is not None:
            row["vs_peer_top1_pt"] = (row["top1"] - best["top1"][1]) * 100
