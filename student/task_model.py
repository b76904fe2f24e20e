"""A task head over sentence vectors: one sentence, or a pair as ``[u; v; |u - v|; u * v]``.

The features are the vectors of the student (fine-tuned or frozen) or, for the
teacher-features baseline, the teacher's cached vectors; the head does not care which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("mlp", "linear")
DISTILL_LOSSES = ("mse", "kl")


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # The InferSent / SentEval combination: symmetric in what it compares, cheap to compute.
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


class TaskHead(nn.Module):
    """``mlp``: dropout -> Linear -> tanh -> dropout -> Linear; ``linear``: one Linear."""

    def __init__(
        self, dim: int, pair: bool, outputs: int, kind: str, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {kind!r}")
        features = 4 * dim if pair else dim
        self.pair = pair
        if kind == "linear":
            self.net: nn.Module = nn.Linear(features, outputs)
        else:
            self.net = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(features, hidden),
                nn.Tanh(),
                nn.Dropout(dropout),
                nn.Linear(hidden, outputs),
            )

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        x = pair_features(u, v) if self.pair and v is not None else u
        out = self.net(x.float())
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, t: float) -> torch.Tensor:
    """The student's outputs against a fine-tuned teacher's.

    ``mse``: squared error on the logits themselves, as Tang et al. (2019) found best for a
    BiLSTM student (it keeps the teacher's confidence, which softmax targets flatten).
    ``kl``: KL(teacher || student) of the temperature-softened distributions, scaled by T^2 so
    its gradients keep their size as T changes (Hinton et al., 2015).
    """
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "kl":
        log_p = F.log_softmax(student / t, dim=-1)
        q = F.softmax(teacher / t, dim=-1)
        return F.kl_div(log_p, q, reduction="batchmean") * t * t
    raise ValueError(f"distill loss must be one of {', '.join(DISTILL_LOSSES)}, got {kind!r}")
