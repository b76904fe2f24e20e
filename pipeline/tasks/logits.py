"""A fine-tuned teacher's logits per task example, cached beside a task's sentences.

Task-specific distillation (Tang et al., 2019) trains the student on what a teacher fine-tuned
on the task outputs; stage one computes those logits once, from the same loaded teacher. The
head's raw outputs are cached whatever the problem: class logits, per-label logits (before
the sigmoid) for multi-label, the predicted score for regression.
"""

from __future__ import annotations

import numpy as np

from cache.errors import SraError
from cache.tasks import CLASSIFICATION, MULTILABEL, REGRESSION, TaskSpec, same_task
from pipeline.tasks.examples import Example
from pipeline.teacher import Teacher, budget_batches


def example_logits(teacher: Teacher, examples: list[Example], budget: int) -> np.ndarray:
    """The fine-tuned teacher's logits per example; a pair is one sequence, as in fine-tuning."""
    if examples and examples[0].text_b is not None:
        encodings = teacher.backend.encode_batch([(e.text_a, e.text_b) for e in examples])
    else:
        encodings = teacher.backend.encode_batch([e.text_a for e in examples])
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int32)
    out = np.zeros((len(examples), teacher.num_labels), np.float32)
    for idx in budget_batches(lengths, budget):
        batch = [encodings[k] for k in idx]
        out[idx] = teacher.logits([e.ids for e in batch], [e.type_ids for e in batch])
    return out


# transformers' problem_type of a sequence-classification head, by our problem.
PROBLEM_TYPES = {
    CLASSIFICATION: "single_label_classification",
    MULTILABEL: "multi_label_classification",
    REGRESSION: "regression",
}


def check_logits_teacher(teacher: Teacher, task: TaskSpec) -> None:
    """Logits only mean something from a teacher fine-tuned on this task's label set: one
    output per class (classification), per label (multilabel), or one (regression)."""
    if teacher.num_labels != task.num_labels:
        raise SraError(
            f"teacher {teacher.name!r} has {teacher.num_labels} output labels but {task.name} "
            f"has {task.num_labels}: fine-tune a teacher on {task.name} with "
            f"`pipeline teacher-finetune --task {task.name}`"
        )
    # Only a problem the head was trained for is refused; most configs leave it unset.
    kind = getattr(teacher.config, "problem_type", None)
    if kind and kind != PROBLEM_TYPES[task.problem]:
        raise SraError(
            f"teacher {teacher.name!r} was fine-tuned for {kind}, but {task.name} is a "
            f"{task.problem} task: use a teacher fine-tuned on {task.name}"
        )
    made_for = teacher.finetuning_task
    if made_for and not same_task(made_for, task):
        raise SraError(
            f"teacher {teacher.name!r} was fine-tuned on {made_for!r}, not {task.name}: its "
            f"logits would be another task's; use a teacher fine-tuned on {task.name}"
        )
