"""The quality columns of `pipeline bench student`: how good each timed model's vectors are.

Speed alone says nothing about whether a model is worth deploying, so each row of the table
also carries: the STS-B dev zero-shot Spearman of cosine similarity (`sts_spearman`); for an
ONNX row, the cosine of its vectors to the torch fp32 model's, per sentence (`agreement`); and
for a fine-tuned run, its GLUE dev metric on the row's backend (`task_quality`). Separate from
`pipeline/bench/student.py` (which times and tabulates) because these read data sets and
score vectors rather than measure speed. `STS_B_DEV` and `GLUE_DIR` are read when called, so
tests point them at small files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import SraError

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", REPO.parent / "shared" / "data"))
STS_B_DEV = SHARED_DATA / "glue" / "STS-B" / "dev.tsv"
GLUE_DIR = SHARED_DATA / "glue"


@dataclass
class QualityRefs:
    """STS-B dev pairs and what reference vectors the ONNX rows are compared with."""

    pairs: Any | None
    unique: list[str]
    references: dict[str, np.ndarray] = field(default_factory=dict)


def read_sts_pairs(notes: list[str]) -> Any | None:
    from student.sts import read_pairs

    if not STS_B_DEV.is_file():
        notes.append(f"STS-B dev not found at {STS_B_DEV}: no STS-B quality column")
        return None
    return read_pairs(STS_B_DEV)


def sts_spearman(refs: QualityRefs, vectors: np.ndarray) -> float:
    from student.sts import cosine_rows, spearman

    index = {text: i for i, text in enumerate(refs.unique)}
    a = vectors[[index[t] for t in refs.pairs.first]]
    b = vectors[[index[t] for t in refs.pairs.second]]
    return round(float(spearman(cosine_rows(a, b), refs.pairs.scores)), 4)


def agreement(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    from student.sts import cosine_rows

    cos = cosine_rows(vectors, reference)
    return {
        "cos_to_fp32_min": round(float(cos.min()), 6),
        "cos_to_fp32_mean": round(float(cos.mean()), 6),
    }


def task_quality(run: Path, backend: str) -> dict[str, Any]:
    """The fine-tuned run's dev metric on ``backend`` (its task's main metric), for GLUE
    tasks (read from the GLUE folder; an own task's dev split is not re-read here)."""
    from cache.tasks import get_task, is_glue_name
    from pipeline.tasks.glue import read_split
    from student.finetuning.metrics import task_scores
    from student.task_model import TaskModel, read_predictions

    model = load_model(lambda: TaskModel.from_pretrained(run, backend))
    if not is_glue_name(model.task.name):
        return {"task": model.task.name, "task_metric": None, "task_score": None}
    task = get_task(model.task.name)
    examples = read_split(task, "dev", GLUE_DIR)
    first = [e.text_a for e in examples]
    second = [e.text_b or "" for e in examples] if task.pair else None
    predictions = read_predictions(task, model.outputs(first, second))
    labels = np.asarray([e.label for e in examples])
    score = task_scores(task, predictions, labels)[task.main_metric]
    return {"task": task.name, "task_metric": task.main_metric, "task_score": round(score, 4)}


def load_model(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except SraError as e:
        raise SraError(str(e)) from None
