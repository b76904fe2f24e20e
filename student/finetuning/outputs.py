"""What a fine-tuning run leaves in its folder, and the scores it reports.

metrics.json              dev metrics under their names (accuracy, f1, mcc, macro_f1, ...)
predictions-SPLIT.tsv     index<TAB>prediction for dev (and test where it exists)
encoder/                  the fine-tuned StudentEncoder (not for --student teacher)
head.safetensors          the task head, described under "head" in finetune.json
task_model.json           what makes the folder a loadable model (student/task_folder.py)
README.md                 the model card (student/finetuning/card.py)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.files import write_atomic
from cache.tasks import TaskSpec
from student.encoder import StudentEncoder
from student.finetuning.data import Examples, Sentences, example_batches
from student.finetuning.head import FinetuneModel
from student.finetuning.metrics import task_scores
from student.runs.checkpoint import tensors_bytes
from student.runtime import autocast
from student.task_folder import ENCODER_DIR, HEAD_FILE, TASK_MODEL_FILE
from student.task_model import label_names, read_predictions

METRICS_JSON = "metrics.json"


@torch.inference_mode()
def predict(
    model: FinetuneModel,
    task: TaskSpec,
    ex: Examples,
    sentences: Sentences,
    features: torch.Tensor | None,
    pad: int,
    device: torch.device,
    bf16: bool,
) -> tuple[dict[str, float], np.ndarray]:
    """(the task's metrics when ``ex`` is labelled, the predictions: class indices, multi-hot
    rows, or scores on the task's scale; read as a loaded TaskModel reads them)."""
    was_training = model.training
    model.eval()
    outputs = np.empty((len(ex), task.num_labels), np.float32)
    for rows in example_batches(ex, sentences.lengths, 256, None):
        with autocast(device, bf16):
            u, v = model.vectors(ex, rows, sentences, features, pad, device)
            outputs[rows] = model.head(u, v).float().reshape(len(rows), -1).cpu().numpy()
    predictions = read_predictions(task, outputs)
    scores = task_scores(task, predictions, ex.labels) if ex.labelled else {}
    model.train(was_training)
    return scores, predictions


def write_predictions(
    path: Path, task: TaskSpec, ex: Examples, predictions: np.ndarray, separator: str = "|"
) -> None:
    """``index<TAB>prediction``: a label name, a score, or (multi-label) the predicted label
    names joined by ``separator`` (empty when none)."""
    names = label_names(task, predictions)
    if task.labels is None:
        values = [f"{p:.4f}" for p in names]
    elif task.is_multilabel:
        values = [separator.join(p) for p in names]
    else:
        values = names
    lines = ["index\tprediction"] + [f"{i}\t{v}" for i, v in zip(ex.idx, values, strict=True)]
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def save_outputs(
    out: Path,
    model: FinetuneModel,
    encoder: StudentEncoder | None,
    metrics: dict[str, Any],
    task_model: dict[str, Any],
) -> None:
    """The encoder (when there is one), the head's weights, task_model.json (after the files
    it describes) and metrics.json."""
    if encoder is not None:
        encoder.save_pretrained(out / ENCODER_DIR)
    write_atomic(out / HEAD_FILE, tensors_bytes(model.head.state_dict()))
    write_atomic(out / TASK_MODEL_FILE, (json.dumps(task_model, indent=2) + "\n").encode())
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
