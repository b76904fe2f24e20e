"""GLUE's official metrics, in numpy (no scikit-learn or scipy at run time).

Each returns a plain float in GLUE's own scale: accuracy and F1 in [0, 1], Matthews
correlation and Pearson/Spearman in [-1, 1]. ``task_scores`` picks the ones a task reports.
"""

from __future__ import annotations

import math

import numpy as np

from cache.tasks import TaskSpec
from student.sts import pearson, spearman

__all__ = ["accuracy", "f1", "mcc", "pearson", "spearman", "task_scores"]


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
    """Matthews correlation (CoLA); 0 when a row or column of the confusion matrix is empty."""
    tp, fp, fn, tn = _confusion(predictions, labels)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


_METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def task_scores(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's GLUE metrics of predictions (class indices, or scores for regression)."""
    return {name: float(_METRICS[name](predictions, labels)) for name in task.metrics}
