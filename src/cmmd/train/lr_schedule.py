"""Learning-rate schedules as pure functions of the step (so resuming needs no scheduler state)."""

from __future__ import annotations

import math
from typing import Literal


def lr_at(
    step: int,
    base_lr: float,
    total_steps: int,
    warmup_steps: int,
    kind: Literal["cosine", "constant"],
    min_lr_ratio: float = 0.1,
) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then constant or cosine decay to
    ``min_lr_ratio * base_lr`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
