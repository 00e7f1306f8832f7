"""Linear warm-up then cosine decay, as a LambdaLR factor."""

from __future__ import annotations

import math


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.02):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
