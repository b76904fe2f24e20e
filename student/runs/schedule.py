"""The one learning-rate schedule: linear warmup to the peak, then a decay to a floor.

Every training command uses it with its own ``OptimConfig`` defaults:

- `pipeline train`: 3% warmup, cosine down to a tenth of the peak;
- `pipeline finetune` and `teacher-finetune`: 10% warmup (rounded down, at least one step),
  then linear down to 0, exactly as they always did.
"""

from __future__ import annotations

import math

from student.runs.options import OptimConfig


def warmup_steps(optim: OptimConfig, total: int) -> int:
    """Steps of linear warmup out of ``total``."""
    if optim.warmup_rounding == "down":
        return max(1, int(optim.warmup * total))
    return max(1, round(optim.warmup * total)) if optim.warmup > 0 else 0


def lr_at(step: int, total: int, optim: OptimConfig) -> float:
    """The learning rate of (0-based) ``step`` out of ``total``."""
    peak = optim.lr
    warmup = warmup_steps(optim, total)
    if step < warmup:
        return peak * (step + 1) / warmup
    if optim.decay == "constant":
        return peak
    floor = peak * optim.min_lr_ratio
    if optim.decay == "linear":
        # Written as what is left of the decay, so that a floor of 0 gives exactly
        # peak * (total - step) / (total - warmup), fine-tuning's formula before this one.
        left = max(0.0, (total - step) / max(1, total - warmup))
        return floor + (peak - floor) * left
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
