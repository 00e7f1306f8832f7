"""The one report a compress run gathers: a record per stage and the verified bundle's metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class StageRecord:
    name: str
    summary: str
    seconds: float
    reused: bool = False
    details: dict = field(default_factory=dict)


@dataclass
class CompressReport:
    target: str
    out: str | None
    passed: bool
    stages: list[StageRecord] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{s.name:<9} {s.seconds:7.1f} s{' (resumed)' if s.reused else ''}  {s.summary}" for s in self.stages]
        return "\n".join(lines)

    def headline(self) -> str:
        from vledge.compress.verify.measure import metric_value

        m = self.metrics
        metric = m["metric"]

        def value(side: dict) -> float:
            return metric_value(side, metric)

        return (
            f"{metric}: teacher {value(m['teacher']):.4f} -> bundle {value(m['bundle']):.4f} "
            f"({value(m['bundle']) / max(value(m['teacher']), 1e-12) * 100:.1f}% kept); "
            f"params {m['teacher_params'] / 1e6:.2f}M -> {m['student_params'] / 1e6:.2f}M ({m['param_ratio']}x); "
            f"size {m['teacher_bytes'] / 1e6:.1f} MB -> {m['bundle_bytes'] / 1e6:.2f} MB ({m['size_ratio']}x)"
        )
