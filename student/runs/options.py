"""The options every training command shares: where it runs, and how it optimises.

``RunOptions`` (device, bf16, overwrite, resume, progress) mean the same for `pipeline train`,
`finetune` and `teacher-finetune`. ``OptimConfig`` is AdamW's peak rate, decay and clipping
plus the learning-rate schedule (``schedule.lr_at``); each command subclasses it only to set
its own defaults, so an option means the same thing wherever it appears.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cache.errors import SraError
from cache.options import internal, option
from student.runtime import DEVICES

DECAYS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class RunOptions:
    """Where a training command runs and what it does with an existing run folder."""

    device: str = option("auto", "auto | cpu | cuda.")
    bf16: bool | None = option(None, "bf16 autocast (default: where the hardware has bf16).")
    overwrite: bool = option(False, "Replace the run in --out, finished or not, same or not.")
    # An unfinished run of the same config always resumes now; the flag stays for old scripts.
    resume: bool = option(False, "Accepted for old scripts: an unfinished run always resumes.")
    progress: bool = option(True, "Show progress.")

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise SraError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.resume and self.overwrite:
            raise SraError("--resume and --overwrite contradict each other; pass one")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its schedule: linear warmup to --lr, then --decay down to --lr x
    --min-lr-ratio. These defaults are distillation's (`pipeline train`)."""

    lr: float = option(2e-3, "Peak learning rate (AdamW).")
    warmup: float = option(0.03, "Share of the steps spent warming up linearly.")
    decay: str = option("cosine", "cosine | linear | constant, after the warmup.")
    min_lr_ratio: float = option(0.1, "Where the decay ends, as a share of --lr.")
    weight_decay: float = option(0.01, "AdamW weight decay.")
    grad_clip: float = option(1.0, "Clip the gradient norm to this.")
    # Fine-tuning has always rounded its warmup down; keeping that keeps its results.
    warmup_rounding: str = internal("nearest", "how warmup steps round: nearest | down")

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SraError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise SraError(f"--warmup must be in [0, 1), got {self.warmup}")
        if self.decay not in DECAYS:
            raise SraError(f"--decay must be cosine, linear or constant, got {self.decay!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise SraError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise SraError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise SraError(f"--grad-clip must be > 0, got {self.grad_clip}")
        if self.warmup_rounding not in ("nearest", "down"):
            raise ValueError(f"warmup_rounding must be nearest or down: {self.warmup_rounding!r}")
