"""Task definitions: what a task's labels mean, its shape, its splits and how it is scored.

One definition (``TaskSpec``) serves every task, whatever its data came from: the nine GLUE
tasks are presets of it (``TASKS``, ``get_task``), and a user's own task (a folder of
CSV/TSV/JSONL/Parquet files, or a hub dataset) gets one built from its training data by
stage one (``own_task``) and stored in the task cache's ``task.json`` (``to_dict`` /
``from_dict``).

Both stages use it (stage one to read task data, stage two to train and score heads), so it
imports only the standard library: stage two must not pull in ``pipeline/``, and the
definitions must not depend on either stage.

Problems:

* ``classification``: one label per example, a class index into ``labels``;
* ``multilabel``: any number of labels per example (a multi-hot row over ``labels``);
* ``regression``: a number per example; ``score_range`` is the scale a head predicts in
  (``to_unit``/``from_unit`` map it to and from [0, 1]).

GLUE label order is the hub dataset's (``nyu-mll/glue``) integer order, so a label index means
the same thing whether the data came from the hub or from the original GLUE TSV files. Own
tasks order their labels as ``label_order`` documents (numbers numerically, strings sorted).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HUB_DATASET = "nyu-mll/glue"
STSB_MIN, STSB_MAX = 0.0, 5.0

CLASSIFICATION, MULTILABEL, REGRESSION = "classification", "multilabel", "regression"
PROBLEMS = (CLASSIFICATION, MULTILABEL, REGRESSION)

# Every metric a task may report (student/finetuning/metrics.py implements them, numpy only).
METRICS = ("accuracy", "f1", "mcc", "macro_f1", "micro_f1", "pearson", "spearman")

_STANDARD_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_STANDARD_HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


@dataclass(frozen=True)
class TaskSpec:
    """One task: what its labels mean, how it is scored, which splits it has.

    ``splits`` maps our split names (``train``, ``dev``..., ``test``...) to the split's name
    in its source: the TSV file in a GLUE folder; an own task's split is its own name.
    ``hub_config``, ``folder`` and ``hub_splits`` say where a GLUE preset's data lives and are
    empty for every other task.
    """

    name: str  # our id: "sst2", "mnli", ..., or an own task's name ("tickets")
    pair: bool  # True when each example is a sentence pair
    labels: tuple[str, ...] | None  # class names in index order; None = regression
    metrics: tuple[str, ...]  # metric names (METRICS); the first is the main one
    main_metric: str  # the one model selection ranks by (GLUE: the leaderboard's)
    splits: dict[str, str]  # our split name -> the split's name in its source
    problem: str = CLASSIFICATION  # classification | multilabel | regression
    # Regression only: the label scale a head predicts in, (low, high). STS-B's is 0-5; an own
    # task's is its training labels' min and max.
    score_range: tuple[float, float] | None = None
    # GLUE presets only: the hub config, the folder of an original GLUE download, hub splits.
    hub_config: str = ""
    folder: str = ""
    hub_splits: dict[str, str] = field(default_factory=dict)

    # `splits` is a dict, so the generated hash would fail; a task is identified by its name.
    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def is_regression(self) -> bool:
        return self.problem == REGRESSION

    @property
    def is_multilabel(self) -> bool:
        return self.problem == MULTILABEL

    @property
    def is_glue(self) -> bool:
        """A GLUE preset (its data read by pipeline/tasks/glue.py), not an own task."""
        return bool(self.folder)

    @property
    def num_labels(self) -> int:
        """Output width of a head for this task: 1 for regression, one per label otherwise."""
        return 1 if self.labels is None else len(self.labels)

    def to_unit(self, scores: Any) -> Any:
        """Regression scores (floats, numpy arrays or tensors) scaled from ``score_range`` to
        [0, 1], the scale a head learns in (STS-B: score / 5)."""
        low, high = self._range()
        return (scores - low) / (high - low)

    def from_unit(self, outputs: Any) -> Any:
        """The inverse of ``to_unit``: a head's outputs back on the task's own scale."""
        low, high = self._range()
        return outputs * (high - low) + low

    def _range(self) -> tuple[float, float]:
        if self.score_range is None:
            raise ValueError(f"task {self.name} is not a regression task: it has no score range")
        return self.score_range

    # -- task.json ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The definition as JSON-able data (``task.json``'s ``definition``)."""
        info: dict[str, Any] = {
            "name": self.name,
            "problem": self.problem,
            "pair": self.pair,
            "labels": None if self.labels is None else list(self.labels),
            "metrics": list(self.metrics),
            "main_metric": self.main_metric,
            "splits": dict(self.splits),
            "score_range": None if self.score_range is None else list(self.score_range),
        }
        if self.is_glue:
            info["glue"] = {
                "hub_config": self.hub_config,
                "folder": self.folder,
                "hub_splits": dict(self.hub_splits),
            }
        return info

    @classmethod
    def from_dict(cls, info: dict[str, Any]) -> TaskSpec:
        """A definition read back from ``to_dict``'s data; ValueError names what is wrong."""
        if not isinstance(info, dict):
            raise ValueError("a task definition is a JSON object")
        try:
            labels = info["labels"]
            score_range = info.get("score_range")
            glue = info.get("glue") or {}
            task = cls(
                name=str(info["name"]),
                pair=bool(info["pair"]),
                labels=None if labels is None else tuple(str(x) for x in labels),
                metrics=tuple(str(m) for m in info["metrics"]),
                main_metric=str(info["main_metric"]),
                splits={str(k): str(v) for k, v in dict(info["splits"]).items()},
                problem=str(info["problem"]),
                score_range=None if score_range is None else _pair_of_floats(score_range),
                hub_config=str(glue.get("hub_config", "")),
                folder=str(glue.get("folder", "")),
                hub_splits={str(k): str(v) for k, v in dict(glue.get("hub_splits", {})).items()},
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"task definition lacks or mangles {e}") from None
        task.check()
        return task

    def check(self) -> None:
        """Refuse a definition that contradicts itself (ValueError, one line)."""
        if not self.name:
            raise ValueError("a task needs a name")
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem {self.problem!r} is not one of {', '.join(PROBLEMS)}")
        if self.is_regression != (self.labels is None):
            raise ValueError(f"a {self.problem} task {'has no' if self.labels else 'needs'} labels")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task {self.name} lists a label twice: {list(self.labels)}")
        if self.problem == CLASSIFICATION and len(self.labels or ()) < 2:
            raise ValueError(f"classification task {self.name} needs at least 2 labels")
        if self.is_multilabel and not self.labels:
            raise ValueError(f"multi-label task {self.name} needs at least 1 label")
        if self.is_regression:
            low, high = self._range()
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"task {self.name} has an empty score range [{low}, {high}]")
        elif self.score_range is not None:
            raise ValueError(f"{self.problem} task {self.name} has a score range")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics or self.main_metric != self.metrics[0]:
            raise ValueError(
                f"task {self.name} metrics {list(self.metrics)} (main {self.main_metric}) are not "
                f"a list of {', '.join(METRICS)} led by the main one"
            )
        if "train" not in self.splits or not dev_splits(self):
            raise ValueError(f"task {self.name} needs a train and a dev split")


def _pair_of_floats(values: Iterable[Any]) -> tuple[float, float]:
    low, high = (float(x) for x in values)
    return low, high


# ---------------------------------------------------------------------------- own tasks


def metrics_for(problem: str, num_labels: int) -> tuple[str, ...]:
    """What an own task reports, the main metric first.

    classification: accuracy, macro-F1, MCC (multi-class MCC beyond 2 classes), plus the F1 of
    the positive class (the second label) when binary; multilabel: micro- and macro-F1;
    regression: Pearson and Spearman.
    """
    if problem == CLASSIFICATION:
        return ("accuracy", "macro_f1", "mcc") + (("f1",) if num_labels == 2 else ())
    if problem == MULTILABEL:
        return ("micro_f1", "macro_f1")
    if problem == REGRESSION:
        return ("pearson", "spearman")
    raise ValueError(f"problem {problem!r} is not one of {', '.join(PROBLEMS)}")


def own_task(
    name: str,
    problem: str,
    pair: bool,
    labels: Iterable[str] | None = None,
    score_range: tuple[float, float] | None = None,
    splits: Iterable[str] = ("train", "dev"),
) -> TaskSpec:
    """The definition of a user's own task (not a GLUE preset), checked."""
    labels = None if labels is None else tuple(labels)
    metrics = metrics_for(problem, 0 if labels is None else len(labels))
    task = TaskSpec(
        name=name,
        pair=pair,
        labels=labels,
        metrics=metrics,
        main_metric=metrics[0],
        splits={s: s for s in splits},
        problem=problem,
        score_range=score_range,
    )
    task.check()
    return task


def label_order(values: Iterable[str | int | float]) -> tuple[str, ...]:
    """An own task's label names in their stored, documented order.

    Numbers (every value an int or float) sort numerically and are named by their shortest
    form ("2", "10", "2.5"); anything else sorts as strings by code point ("Bug" < "bug").
    Either way the order depends only on the set of training labels, never on file order.
    """
    distinct = set(values)
    if distinct and all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct):
        return tuple(number_name(v) for v in sorted(distinct))  # type: ignore[type-var]
    return tuple(sorted(str(v) for v in distinct))


def number_name(value: int | float) -> str:
    """A numeric label's name: integers without a decimal point (1.0 -> "1")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------------------- GLUE presets


def _task(
    name: str,
    folder: str,
    pair: bool,
    labels: tuple[str, ...] | None,
    metrics: tuple[str, ...],
    splits: dict[str, str] | None = None,
    hub_splits: dict[str, str] | None = None,
) -> TaskSpec:
    return TaskSpec(
        name=name,
        pair=pair,
        labels=labels,
        metrics=metrics,
        main_metric=metrics[0],
        splits=dict(splits or _STANDARD_SPLITS),
        problem=CLASSIFICATION if labels is not None else REGRESSION,
        score_range=None if labels is not None else (STSB_MIN, STSB_MAX),
        hub_config=name,
        folder=folder,
        hub_splits=dict(hub_splits or _STANDARD_HUB_SPLITS),
    )


_ENTAILMENT = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        _task("sst2", "SST-2", False, ("negative", "positive"), ("accuracy",)),
        _task("cola", "CoLA", False, ("unacceptable", "acceptable"), ("mcc",)),
        _task("mrpc", "MRPC", True, ("not_equivalent", "equivalent"), ("f1", "accuracy")),
        _task("stsb", "STS-B", True, None, ("pearson", "spearman")),
        _task("qqp", "QQP", True, ("not_duplicate", "duplicate"), ("accuracy", "f1")),
        _task(
            "mnli",
            "MNLI",
            True,
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            splits={
                "train": "train.tsv",
                "dev_matched": "dev_matched.tsv",
                "dev_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv",
                "test_mismatched": "test_mismatched.tsv",
            },
            hub_splits={
                "train": "train",
                "dev_matched": "validation_matched",
                "dev_mismatched": "validation_mismatched",
                "test_matched": "test_matched",
                "test_mismatched": "test_mismatched",
            },
        ),
        _task("qnli", "QNLI", True, _ENTAILMENT, ("accuracy",)),
        _task("rte", "RTE", True, _ENTAILMENT, ("accuracy",)),
        # WNLI's hub order is the reverse of RTE's: 0 = not_entailment.
        _task("wnli", "WNLI", True, ("not_entailment", "entailment"), ("accuracy",)),
    )
}


def _fold(name: str) -> str:
    # "SST-2", "sst_2", " Sts-B " all name one task: our ids are the folder names folded.
    return re.sub(r"[\s_-]", "", name.lower())


_ALIASES: dict[str, str] = {
    _fold(alias): spec.name
    for spec in TASKS.values()
    for alias in (spec.name, spec.folder, spec.hub_config)
}


def get_task(name: str) -> TaskSpec:
    """The GLUE preset called `name`: our id or the GLUE folder name, in any case ("SST-2")."""
    key = _fold(str(name))
    if key not in _ALIASES:
        raise ValueError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[_ALIASES[key]]


def is_glue_name(name: str) -> bool:
    """Whether ``name`` names a GLUE preset in any spelling ``get_task`` accepts."""
    return _fold(str(name)) in _ALIASES


def same_task(name: str, task: TaskSpec) -> bool:
    """Whether ``name`` names ``task``: for a GLUE preset any spelling get_task accepts
    (unknown names never match); for an own task its name, case and dashes aside."""
    key = _fold(str(name))
    if task.is_glue:
        return key in _ALIASES and _ALIASES[key] == task.name
    return key == _fold(task.name)


def dev_splits(task: TaskSpec) -> tuple[str, ...]:
    """The labelled evaluation splits: ("dev",), or MNLI's matched and mismatched pair."""
    return tuple(split for split in task.splits if split.startswith("dev"))


def unlabeled_splits(task: TaskSpec) -> tuple[str, ...]:
    """The test splits: ("test",), or MNLI's two. GLUE withholds their labels; an own task's
    test split may have them."""
    return tuple(split for split in task.splits if split.startswith("test"))
