"""`vledge bench`: accuracy, latency, memory and size of the teacher, the peer pipelines and every
compressed variant, as a table, CSV, JSON and plots, with the user's budgets (``require``) checked
on every bundle row.

Importing this package loads nothing heavy (the measuring worker process starts from it).
"""

from __future__ import annotations


def bench(config):
    """Run the benchmark a :class:`BenchConfig` describes; see :func:`vledge.bench.runner.bench`."""
    from vledge.bench.runner import bench as _bench

    return _bench(config)


def __getattr__(name):
    if name == "BenchConfig":
        from vledge.bench.config import BenchConfig

        return BenchConfig
    raise AttributeError(f"module 'vledge.bench' has no attribute {name!r}")


__all__ = ["bench", "BenchConfig"]
