"""No spin-waiting by default: OpenMP threads that wait by spinning hold a core at 100% between parallel
regions. On a quiet machine that saves microseconds; on a shared one (an edge box running a camera
pipeline, a CI runner, a workstation with other jobs) the spinning threads take the cores the working
threads need: on two shared cores a training step took 18 s with OpenMP's default policy and 0.8 s with
``PASSIVE`` (``benchmarks/spin_wait.py``). ``PASSIVE`` makes waiting threads sleep. OpenMP reads the variable once, when torch loads its runtime, so it must be set before
``import torch``; a value the user set is kept."""

from __future__ import annotations

import os
import sys


def prefer_passive_waits(environ=None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set already or torch is loaded (too late to matter).
    Returns whether it was set."""
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in environ or "torch" in sys.modules:
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
