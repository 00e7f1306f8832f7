"""BenchConfig: the settings of one `vledge bench` run, checked when it is made."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from vledge.bench.measure import CURVE_BATCHES, CURVE_REPS, Repetitions
from vledge.errors import ConfigError


@dataclass
class BenchConfig:
    """Settings of one benchmark run (``vledge bench --help`` explains each flag).

    ``require``: budgets over the row keys, checked on every bundle row (``vledge.bench.budgets``),
    e.g. ``"image_b1_p50_ms<=5,top1_kept>=0.97"``; None checks nothing.
    """

    teacher: str
    bundles: list[str] = field(default_factory=list)
    data: str = "fashion-mnist"
    data_dir: str | None = None
    split: str = "test"
    out: str = "bench-report"
    work_dir: str | None = None  # default: OUT/work (exported variants, the distilled student, logs)
    threads: int = 2
    max_samples: int | None = None
    student: str | None = None
    rows: list[str] | None = None  # keys of the built-in rows to measure (see --help); None: all
    distill_epochs: int | None = None
    distill_samples: int | None = None
    scaling: bool = True  # the batch-size curves of every row
    scaling_batches: tuple[int, ...] = CURVE_BATCHES
    reps: Repetitions = field(default_factory=Repetitions)
    scaling_reps: Repetitions = CURVE_REPS
    probe_images: int = 256
    row_timeout: float = 1800.0
    retries: int = 2  # times a row timed under background load is timed again
    repeats: int = 3  # processes each row is timed in; latencies are the median across them
    resume: bool = False
    seed: int = 0
    require: str | None = None

    def __post_init__(self):
        if self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"max_samples must be positive, got {self.max_samples}")
        if self.repeats < 1 or self.retries < 0:
            raise ConfigError(f"repeats must be at least 1 and retries at least 0, got {self.repeats}, {self.retries}")
        if self.probe_images < 8:
            raise ConfigError(f"probe_images must be at least 8 (batch-8 latency), got {self.probe_images}")
        if not Path(self.teacher).is_dir():
            raise ConfigError(f"teacher checkpoint folder not found: {self.teacher} (pass --teacher ckpt/)")
        if self.require is not None and not self.bundles:
            raise ConfigError("--require checks bundle rows, and no BUNDLE was given: "
                              "pass the bundle folders to check, e.g. vledge bench runs/bundle-cpu --teacher ... --require ...")
        self.budgets()

    def budgets(self) -> list:
        """The parsed ``require`` (an empty list without one); a ConfigError for a budget that cannot be read."""
        if self.require is None:
            return []
        from vledge.bench.budgets import parse_budgets
        from vledge.bench.report import BUDGET_KEYS

        return parse_budgets(self.require, BUDGET_KEYS)

    def to_dict(self) -> dict:
        return asdict(self)
