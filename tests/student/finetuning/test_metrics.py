"""Task metrics against values worked out by hand (and scikit-learn where it is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cache.tasks import MULTILABEL, REGRESSION, get_task, own_task
from student.finetuning.metrics import accuracy, f1, macro_f1, mcc, micro_f1, task_scores

# Three classes: 0 0 1 1 2 2 predicted as 0 1 1 1 2 0.
Y3 = np.array([0, 0, 1, 1, 2, 2])
P3 = np.array([0, 1, 1, 1, 2, 0])
# Multi-hot rows over three labels.
YML = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
PML = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])


def test_single_label_metrics_by_hand() -> None:
    assert accuracy(P3, Y3) == pytest.approx(4 / 6)
    # F1 per class: 0: tp 1 fp 1 fn 1 -> 1/2; 1: tp 2 fp 1 fn 0 -> 4/5; 2: tp 1 fn 1 -> 2/3
    assert macro_f1(P3, Y3) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # c = 4 correct of s = 6; predicted counts 2, 3, 1; true counts 2, 2, 2:
    # (4 * 6 - (4 + 6 + 2)) / sqrt((36 - 14) * (36 - 12))
    assert mcc(P3, Y3) == pytest.approx(12 / math.sqrt(22 * 24))
    # A class neither true nor predicted has no F1 and is left out of the mean.
    assert macro_f1(np.array([0, 2, 2]), np.array([0, 0, 2])) == pytest.approx(2 / 3)
    assert micro_f1(P3, Y3) == accuracy(P3, Y3)


def test_binary_metrics_by_hand_and_glue_mcc_unchanged() -> None:
    y, p = np.array([1, 0, 1, 1]), np.array([1, 1, 0, 1])
    assert f1(p, y) == pytest.approx(2 / 3)  # tp 2, fp 1, fn 1
    assert mcc(p, y) == pytest.approx(-1 / 3)  # (0 - 1) / sqrt(3 * 3 * 1 * 1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
        tp, fp = int(np.sum((p == 1) & (y == 1))), int(np.sum((p == 1) & (y == 0)))
        fn, tn = int(np.sum((p == 0) & (y == 1))), int(np.sum((p == 0) & (y == 0)))
        binary = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        assert mcc(p, y) == binary  # CoLA's formula, bit for bit
        # ... which the multi-class formula agrees with on two classes (relabelled 1, 2)
        assert mcc(p + 1, y + 1) == pytest.approx(binary, abs=1e-12)


def test_multilabel_metrics_by_hand() -> None:
    # cells: tp 3, fp 1, fn 2 -> 6 / 9; per label F1: 1, 2/3, 0
    assert micro_f1(PML, YML) == pytest.approx(6 / 9)
    assert macro_f1(PML, YML) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_against_scikit_learn_where_installed() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert macro_f1(p, y) == pytest.approx(metrics.f1_score(y, p, average="macro"))
    assert mcc(p, y) == pytest.approx(metrics.matthews_corrcoef(y, p))
    y, p = rng.integers(0, 2, (100, 4)), rng.integers(0, 2, (100, 4))
    assert micro_f1(p, y) == pytest.approx(metrics.f1_score(y, p, average="micro"))
    assert macro_f1(p, y) == pytest.approx(metrics.f1_score(y, p, average="macro"))


def test_task_scores_pick_by_problem_and_glue_keeps_its_own() -> None:
    three = own_task("q", "classification", False, ("a", "b", "c"))
    assert task_scores(three, P3, Y3) == pytest.approx(
        {"accuracy": 4 / 6, "macro_f1": (1 / 2 + 4 / 5 + 2 / 3) / 3, "mcc": 12 / math.sqrt(528)}
    )
    binary = own_task("spam", "classification", False, ("ham", "spam"))
    assert set(task_scores(binary, np.array([1, 0]), np.array([1, 1]))) == {
        "accuracy",
        "macro_f1",
        "mcc",
        "f1",
    }
    tags = own_task("tags", MULTILABEL, False, ("x", "y", "z"))
    assert task_scores(tags, PML, YML) == pytest.approx({"micro_f1": 6 / 9, "macro_f1": 5 / 9})
    score = own_task("s", REGRESSION, True, None, (0.0, 1.0))
    assert set(task_scores(score, np.array([0.1, 0.5, 0.4]), np.array([1.0, 3.0, 2.0]))) == {
        "pearson",
        "spearman",
    }
    assert set(task_scores(get_task("mrpc"), np.array([1, 0]), np.array([1, 1]))) == {
        "f1",
        "accuracy",
    }
    assert set(task_scores(get_task("cola"), np.array([1, 0]), np.array([1, 1]))) == {"mcc"}
