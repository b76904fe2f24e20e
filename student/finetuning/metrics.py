"""Task metrics in numpy (no scikit-learn or scipy at run time): GLUE's official ones, and
those of own tasks (macro-F1, multi-class MCC, multi-label micro/macro-F1).

Each returns a plain float: accuracy and F1 in [0, 1], Matthews correlation and
Pearson/Spearman in [-1, 1]. ``task_scores`` picks the ones a task reports (its definition's
``metrics``: GLUE's official list for a preset, by problem for an own task, see
``cache.tasks.metrics_for``).

Predictions and labels are class indices (``[n]``) for classification, multi-hot rows
(``[n, labels]``, 0/1) for multi-label, scores for regression.
"""

from __future__ import annotations

import math

import numpy as np

from cache.tasks import TaskSpec
from student.sts import pearson, spearman

__all__ = [
    "accuracy",
    "f1",
    "macro_f1",
    "mcc",
    "micro_f1",
    "pearson",
    "spearman",
    "task_scores",
]


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float(np.mean(predictions == labels)) if len(labels) else float("nan")


def _confusion(predictions: np.ndarray, labels: np.ndarray) -> tuple[int, int, int, int]:
    p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
    return int(np.sum(p & y)), int(np.sum(p & ~y)), int(np.sum(~p & y)), int(np.sum(~p & ~y))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    tp, fp, fn, _ = _confusion(predictions, labels)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (CoLA); 0 when a row or column of the confusion matrix is empty.

    Beyond two classes, the multi-class generalisation (Gorodkin 2004, scikit-learn's):
    ``(c * s - sum_k p_k * t_k) / sqrt((s^2 - sum_k p_k^2) * (s^2 - sum_k t_k^2))`` with ``c``
    the correct predictions, ``s`` the examples, ``p_k``/``t_k`` the predicted/true counts of
    class k. On two classes it equals the binary formula, which GLUE tasks keep using.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if _binary(predictions, labels):
        tp, fp, fn, tn = _confusion(predictions, labels)
        denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return (tp * tn - fp * fn) / denominator if denominator else 0.0
    classes = np.union1d(predictions, labels)
    p = np.array([int(np.sum(predictions == k)) for k in classes], dtype=object)
    t = np.array([int(np.sum(labels == k)) for k in classes], dtype=object)
    c, s = int(np.sum(predictions == labels)), len(labels)
    denominator = math.sqrt((s * s - int(np.dot(p, p))) * (s * s - int(np.dot(t, t))))
    return (c * s - int(np.dot(p, t))) / denominator if denominator else 0.0


def _binary(predictions: np.ndarray, labels: np.ndarray) -> bool:
    values = np.union1d(predictions, labels)
    return bool(np.isin(values, (0, 1)).all())


def _f1_of(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """The mean F1 over classes (multi-label: over labels), each class's F1 counted once.

    Classes are those that occur in the labels or the predictions (as scikit-learn's
    ``average="macro"`` on single-label data): a class absent from both has no F1 and is left
    out, a class predicted but never true scores 0. Multi-hot ``[n, labels]`` input averages
    the per-label F1 the same way.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if not len(labels):
        return float("nan")
    if labels.ndim == 2:  # multi-label: one column per label
        p, y = predictions == 1, labels == 1
        scores = [
            _f1_of(
                int(np.sum(p[:, k] & y[:, k])),
                int(np.sum(p[:, k] & ~y[:, k])),
                int(np.sum(~p[:, k] & y[:, k])),
            )
            for k in range(labels.shape[1])
            if p[:, k].any() or y[:, k].any()
        ]
    else:
        scores = [
            _f1_of(
                int(np.sum((predictions == k) & (labels == k))),
                int(np.sum((predictions == k) & (labels != k))),
                int(np.sum((predictions != k) & (labels == k))),
            )
            for k in np.union1d(predictions, labels)
        ]
    return float(np.mean(scores)) if scores else 0.0


def micro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 over every (example, label) decision pooled: ``2 TP / (2 TP + FP + FN)`` over all
    cells of multi-hot ``[n, labels]`` rows; on single-label class indices it is accuracy."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if labels.ndim != 2:
        return accuracy(predictions, labels)
    p, y = predictions == 1, labels == 1
    return _f1_of(int(np.sum(p & y)), int(np.sum(p & ~y)), int(np.sum(~p & y)))


_METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": mcc,
    "macro_f1": macro_f1,
    "micro_f1": micro_f1,
    "pearson": pearson,
    "spearman": spearman,
}


def task_scores(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics of predictions (class indices, multi-hot rows, or scores)."""
    return {name: float(_METRICS[name](predictions, labels)) for name in task.metrics}
