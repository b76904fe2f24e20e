"""Held-out fidelity to the teacher: MSE and mean cosine of the student's vectors to the
teacher's, on rows training never sees (``data.compute_split``).

Like sentence-transformers' ``MSEEvaluator``: built once from the held-out batches, called
whenever the loop validates. Ranks split the batches and add up their sums, so the numbers
are those of one process over all the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F

from student.model import BiLSTMEncoder
from student.training.data import Batch
from student.training.dist import Dist


class HeldOut:
    """``held_out(model)`` -> ``{"val_mse", "val_cos", "val_rows"}`` (empty without rows)."""

    def __init__(
        self,
        batches: list[Batch],
        dist: Dist,
        *,
        targets: Callable[[torch.Tensor], torch.Tensor],
        autocast: AbstractContextManager[Any],
    ) -> None:
        self.batches = batches
        self.dist = dist
        self.targets = targets  # what the vectors are compared to (unit length, or as cached)
        self.autocast = autocast

    def __len__(self) -> int:
        return len(self.batches)

    @torch.no_grad()
    def __call__(self, model: BiLSTMEncoder) -> dict[str, float]:
        dist = self.dist
        model.eval()
        sse = cos = rows = 0.0
        try:
            for batch in self.batches[dist.rank :: dist.world]:
                b = batch.to(dist.device)
                targets = self.targets(b.targets)
                with self.autocast:
                    pred = model(b.input_ids, b.lengths)
                pred = pred.float()
                sse += float(((pred - targets) ** 2).mean(dim=-1).sum())
                cos += float(F.cosine_similarity(pred, targets, dim=-1).sum())
                rows += len(batch)
        finally:
            model.train()
        sse, cos, rows = dist.sum([sse, cos, rows])
        if not rows:
            return {}
        return {"val_mse": sse / rows, "val_cos": cos / rows, "val_rows": int(rows)}
