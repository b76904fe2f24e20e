"""Sentence representation approximation (Wu et al. 2020): the student's vector for a
sentence should be the teacher's. Always on; the other objectives ride along beside it.

loss = MSE(student, teacher) + cos_weight * (1 - cosine(student, teacher))

With ``normalize_targets`` the teacher's vectors are scaled to unit length first: only their
direction (what cosine similarity sees) is learnt, not their length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cache.errors import SraError
from cache.options import option
from student.training.objectives.base import Objective

if TYPE_CHECKING:
    import torch

    from student.training.objectives.base import Setup


@dataclass(frozen=True)
class DistillOptions:
    cos_weight: float = option(0.0, "Loss = MSE + W * (1 - cosine to the teacher).")
    normalize_targets: bool = option(
        False, "Train on unit-length teacher vectors (cosine geometry only)."
    )

    def __post_init__(self) -> None:
        if not (self.cos_weight >= 0 and math.isfinite(self.cos_weight)):
            raise SraError(f"--cos-weight must be a number >= 0, got {self.cos_weight}")

    @property
    def enabled(self) -> bool:
        return True

    def identity(self) -> dict[str, Any]:
        # Where these two always sat in a run's identity, so fingerprints stay as they were.
        return {
            "optim": {"cos_weight": self.cos_weight, "normalize_targets": self.normalize_targets}
        }

    def check(self, cfg: Any) -> None:
        pass

    def build(self, setup: Setup) -> Distill:
        return Distill(self)


class Distill(Objective):
    name = "distill"

    def __init__(self, options: DistillOptions) -> None:
        self.options = options

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.normalize(targets, dim=-1) if self.options.normalize_targets else targets

    def loss(
        self, vectors: torch.Tensor, targets: torch.Tensor, side: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import torch.nn.functional as F

        mse = F.mse_loss(vectors, targets)
        cos = F.cosine_similarity(vectors, targets, dim=-1).mean()
        weight = self.options.cos_weight
        return (mse + weight * (1 - cos) if weight else mse), {"train_cos": cos}
