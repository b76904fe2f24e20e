"""What `pipeline train` minimises: training objectives as plug-ins.

Distillation (``distill.py``) always runs; the others join it when their weight is set:
``bilm.py`` (``--lm-weight``) and ``realfake.py`` (``--rf-weight``). The training loop names
none of them: it asks ``Objectives`` to prepare each batch, run the student, and add up the
loss. The interface an objective implements is in ``base.py``.

To add one: write its file (its options and its ``Objective``, as the others do) and add one
line to ``ObjectivesConfig`` below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cache.options import nested
from student.training.objectives.base import Objective, Setup
from student.training.objectives.bilm import BiLMOptions
from student.training.objectives.distill import DistillOptions
from student.training.objectives.realfake import RealFakeOptions

if TYPE_CHECKING:
    import torch

    from student.training.data import Batch

__all__ = ["Objective", "Objectives", "ObjectivesConfig", "Setup"]


@dataclass(frozen=True)
class ObjectivesConfig:
    """The registry: one field per objective, in the order their losses are added."""

    distill: DistillOptions = nested(DistillOptions)
    bilm: BiLMOptions = nested(BiLMOptions)
    realfake: RealFakeOptions = nested(RealFakeOptions)

    def enabled(self) -> list[Any]:
        """The options of every objective that is on."""
        every = (getattr(self, f.name) for f in dataclasses.fields(self))
        return [options for options in every if options.enabled]

    def check(self, cfg: Any) -> None:
        """Refuse combinations an objective cannot train with (``cfg``: the TrainConfig)."""
        for options in self.enabled():
            options.check(cfg)

    def identity(self) -> dict[str, Any]:
        """What the objectives that are on add to the run's identity."""
        out: dict[str, Any] = {}
        for options in self.enabled():
            out = merge(out, options.identity())
        return out


class Objectives:
    """The objectives of one run, built: what the loop calls each batch."""

    def __init__(self, config: ObjectivesConfig, setup: Setup) -> None:
        self.items: list[Objective] = [options.build(setup) for options in config.enabled()]
        self.heads = {o.name: o.head for o in self.items if o.head is not None}

    def prepare(self, batch: Batch, step: int, rank: int) -> dict[str, Any]:
        return {o.name: o.prepare(batch, step, rank) for o in self.items}

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        for o in self.items:
            targets = o.targets(targets)
        return targets

    def loss(
        self, vectors: torch.Tensor, targets: torch.Tensor, side: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The sum of every objective's share, and everything they log."""
        total: torch.Tensor | None = None
        logged: dict[str, torch.Tensor] = {}
        for o in self.items:
            share, values = o.loss(vectors, targets, side)
            logged |= values
            if share is not None:
                total = share if total is None else total + share
        if total is None:
            raise ValueError("no objective contributes a loss")
        return total, logged


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` and ``b`` merged key by key, into nested dicts too."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
