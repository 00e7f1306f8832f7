"""How long a run trains (epochs, and passes over the data in each), and its learning-rate schedule: linear
warm-up then cosine decay, as a LambdaLR factor."""

from __future__ import annotations

import math


def epoch_plan(epochs: int | None, steps_per_pass: int, *, default_epochs: int, min_steps: int) -> tuple[int, int]:
    """``(epochs, passes over the data per epoch)``.

    An explicit ``epochs`` runs as asked, one pass each. By default a run takes ``default_epochs`` epochs of
    as many passes as reach ``min_steps`` optimiser steps in all, so a small data set trains as long as a
    large one while validation (once an epoch) stays as frequent.
    """
    if epochs is not None:
        return epochs, 1
    return default_epochs, max(1, math.ceil(min_steps / (default_epochs * max(1, steps_per_pass))))


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.02):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
