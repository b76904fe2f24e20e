"""The one learning-rate schedule, held to the three schedules it replaced."""

from __future__ import annotations

import math

import pytest

from pipeline.tasks.teacher_finetune import TeacherOptim
from student.finetuning.config import FinetuneOptim
from student.runs.options import OptimConfig
from student.runs.schedule import lr_at, warmup_steps


def train_before(step, total, warmup, lr, decay, min_lr_ratio):  # type: ignore[no-untyped-def]
    """`pipeline train`'s lr_at, as it was."""
    w = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < w:
        return lr * (step + 1) / w
    if decay == "constant":
        return lr
    progress = min(1.0, (step - w) / max(1, total - w))
    floor = lr * min_lr_ratio
    if decay == "linear":
        return lr - (lr - floor) * progress
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))


def finetune_before(step, total, lr, warmup=0.1):  # type: ignore[no-untyped-def]
    """`pipeline finetune`'s closure, as it was."""
    w = max(1, int(warmup * total))
    if step < w:
        return lr * (step + 1) / w
    return lr * max(0.0, (total - step) / max(1, total - w))


def teacher_before(step, total, lr, warmup=0.1):  # type: ignore[no-untyped-def]
    """`pipeline teacher-finetune`'s, as it was."""
    w = max(1, int(warmup * total))
    decay = max(0.0, (total - step) / max(1, total - w))
    return lr * min((step + 1) / w, decay)


@pytest.mark.parametrize("total", [1, 7, 95, 1000])
@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("warmup", [0.0, 0.03, 0.5])
def test_train_keeps_its_schedule(total, decay, warmup):
    optim = OptimConfig(lr=2e-3, warmup=warmup, decay=decay, min_lr_ratio=0.1)
    for step in range(total):
        want = train_before(step, total, warmup, 2e-3, decay, 0.1)
        assert lr_at(step, total, optim) == pytest.approx(want, rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("total", [1, 15, 95, 600])
def test_finetune_and_teacher_finetune_keep_theirs(total):
    # Fine-tuning's default is exactly the formula it always used, bit for bit.
    for step in range(total):
        assert lr_at(step, total, FinetuneOptim()) == finetune_before(step, total, 1e-3)
        want = teacher_before(step, total, 5e-5)
        assert lr_at(step, total, TeacherOptim()) == pytest.approx(want, rel=1e-12)
    # Their warmup rounds down (95 steps: 9, where train's rounding would give 10).
    assert warmup_steps(FinetuneOptim(), 95) == 9 == warmup_steps(TeacherOptim(), 95)
    assert warmup_steps(OptimConfig(warmup=0.1), 95) == 10


def test_decay_reaches_the_floor():
    optim = OptimConfig(lr=1.0, warmup=0.0, decay="cosine", min_lr_ratio=0.25)
    assert lr_at(0, 100, optim) == pytest.approx(1.0)
    assert lr_at(100, 100, optim) == pytest.approx(0.25)
    linear = FinetuneOptim(lr=1.0, min_lr_ratio=0.5)
    assert lr_at(99, 100, linear) == pytest.approx(0.5 + 0.5 * 1 / 90)
