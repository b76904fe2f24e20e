"""What a fine-tuning run leaves in its folder, and the scores it reports.

metrics.json              dev metrics under their GLUE names (accuracy, f1, mcc, ...)
predictions-SPLIT.tsv     index<TAB>prediction for dev (and test where it exists)
encoder/                  the fine-tuned StudentEncoder (not for --student teacher)
head.safetensors          the task head, described under "head" in finetune.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.files import write_atomic
from cache.tasks import STSB_MAX, TaskSpec
from student.encoder import StudentEncoder
from student.finetuning.data import Examples, Sentences, example_batches
from student.finetuning.head import TaskModel
from student.finetuning.metrics import task_scores
from student.runs.checkpoint import tensors_bytes
from student.runtime import autocast

METRICS_JSON, HEAD_FILE, ENCODER_DIR = "metrics.json", "head.safetensors", "encoder"


@torch.inference_mode()
def predict(
    model: TaskModel,
    task: TaskSpec,
    ex: Examples,
    sentences: Sentences,
    features: torch.Tensor | None,
    pad: int,
    device: torch.device,
    bf16: bool,
) -> tuple[dict[str, float], np.ndarray]:
    """(the task's metrics when ``ex`` is labelled, the predictions: labels or 0-5 scores)."""
    was_training = model.training
    model.eval()
    outputs = np.empty((len(ex),) if task.is_regression else (len(ex), task.num_labels), np.float32)
    for rows in example_batches(ex, sentences.lengths, 256, None):
        with autocast(device, bf16):
            u, v = model.vectors(ex, rows, sentences, features, pad, device)
            outputs[rows] = model.head(u, v).float().cpu().numpy()
    predictions = outputs * STSB_MAX if task.is_regression else outputs.argmax(-1)
    scores = task_scores(task, predictions, ex.labels) if ex.labelled else {}
    model.train(was_training)
    return scores, predictions


def write_predictions(path: Path, task: TaskSpec, ex: Examples, predictions: np.ndarray) -> None:
    if task.labels is None:
        values = [f"{float(p):.4f}" for p in predictions]
    else:
        values = [task.labels[int(p)] for p in predictions]
    lines = ["index\tprediction"] + [f"{i}\t{v}" for i, v in zip(ex.idx, values, strict=True)]
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def save_outputs(
    out: Path, model: TaskModel, encoder: StudentEncoder | None, metrics: dict[str, Any]
) -> None:
    """The encoder (when there is one), the head's weights and metrics.json."""
    if encoder is not None:
        encoder.save_pretrained(out / ENCODER_DIR)
    write_atomic(out / HEAD_FILE, tensors_bytes(model.head.state_dict()))
    write_atomic(out / METRICS_JSON, (json.dumps(metrics, indent=2) + "\n").encode())


def read_metrics(out: Path) -> dict[str, Any]:
    """metrics.json of a finished run."""
    from cache.errors import SraError

    try:
        return json.loads((out / METRICS_JSON).read_text())
    except (OSError, ValueError) as e:
        raise SraError(
            f"{out / METRICS_JSON} is unreadable ({type(e).__name__}); pass --overwrite to "
            "run it again"
        ) from None
