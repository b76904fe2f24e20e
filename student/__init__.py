"""Stage two of the SRA pipeline: the BiLSTM student that approximates a BERT teacher.

A trained student encodes sentences on CPU without the teacher (and without
``transformers``)::

    from student import StudentEncoder
    enc = StudentEncoder.from_pretrained("runs/sra-minilm")
    vecs = enc.encode(["A sentence.", "Another one."])

and a fine-tuned one (``pipeline finetune --out``) classifies or scores texts::

    from student import TaskModel
    model = TaskModel.from_pretrained("runs/tickets")
    model.predict(["my card was charged twice"])        # label names (scores for regression)
    model.predict_proba(["my card was charged twice"])  # per-label probabilities

Training one from a stage-one cache (``pipeline train``)::

    from student import TrainConfig, train
    train(TrainConfig(cache="caches/wiki-minilm", out="runs/sra-minilm"))

The package's top level is what a deployed student needs: ``config`` (StudentConfig),
``model`` (BiLSTMEncoder), ``encoder`` (StudentEncoder), ``task_model`` (TaskModel),
``runtime`` (device and bf16) and ``sts``. Training lives in ``student.training``
(distillation), ``student.finetuning`` (tasks: GLUE or your own) and ``student.runs`` (the
run folder both share).

This package must never import ``transformers`` or the ``pipeline`` package: it only
needs torch, tokenizers, safetensors, numpy and the ``cache`` reader. The names below load on
first use, so that reading a config (the command line does, at start-up) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cache.errors import SraError

if TYPE_CHECKING:
    from student.config import StudentConfig
    from student.encoder import StudentEncoder
    from student.model import BiLSTMEncoder
    from student.task_model import TaskModel
    from student.training.config import TrainConfig
    from student.training.loop import train

StudentError = SraError  # the old name, kept for callers

_LAZY = {
    "StudentConfig": "student.config",
    "StudentEncoder": "student.encoder",
    "BiLSTMEncoder": "student.model",
    "TaskModel": "student.task_model",
    "TrainConfig": "student.training.config",
    "train": "student.training.loop",
}

__all__ = [
    "BiLSTMEncoder",
    "SraError",
    "StudentConfig",
    "StudentEncoder",
    "StudentError",
    "TaskModel",
    "TrainConfig",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'student' has no attribute {name!r}")
