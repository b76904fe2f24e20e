"""The interface every training objective implements (the registry is in ``__init__``).

An objective has two parts, in one file:

- its **options**, a small frozen dataclass of ``option()`` fields (the command line's
  ``--lm-weight`` ...) with ``enabled``, ``identity()`` (what it adds to the run's identity:
  only when enabled, so runs without it keep their fingerprints), ``check(cfg)`` (refusing
  combinations with other options) and ``build(setup)``, which returns
- the **objective** itself, an ``Objective``: an optional training-only ``head`` (trained and
  checkpointed with the student, never saved with it) and the hooks the loop calls per batch:

  ``prepare(batch, step, rank)``
      on the CPU batch, before the forward: what ``run`` needs (corrupted copies, sampled
      negatives), reproducible from (step, rank) so that a resumed run draws the same;
  ``run(student, head, ids, lengths, prepared)``
      inside the forward: an objective that needs the student's insides (per-token states,
      extra rows) computes the sentence vectors itself and returns ``(vectors, side)``;
      the others return None and the student runs plainly;
  ``targets(targets)``
      what the student's vectors are compared to (also for validation);
  ``loss(vectors, targets, side)``
      its weighted share of the loss (or None) and the values it logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

    from cache import Cache
    from student.model import BiLSTMEncoder
    from student.training.data import Batch


@dataclass
class Setup:
    """What an objective may need to build itself."""

    student: BiLSTMEncoder
    cache: Cache
    tokenizer: Tokenizer
    seed: int


class Objective:
    """An objective that adds nothing: each one overrides the hooks it needs."""

    name = ""  # its head's name in checkpoints (``lm.`` ...)
    head: torch.nn.Module | None = None

    def prepare(self, batch: Batch, step: int, rank: int) -> Any:
        return None

    def run(
        self,
        student: BiLSTMEncoder,
        head: torch.nn.Module | None,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        prepared: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        return None

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        return targets

    def loss(
        self, vectors: torch.Tensor, targets: torch.Tensor, side: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        return None, {}
