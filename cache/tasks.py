"""The GLUE task registry: names, label sets, metrics and split files of the nine tasks.

Both stages use it (stage one to read task data, stage two to train and score heads), so it
imports only the standard library: stage two must not pull in `pipeline/`, and the registry
must not depend on either stage.

Label order is the hub dataset's (`nyu-mll/glue`) integer order, so a label index means the
same thing whether the data came from the hub or from the original GLUE TSV files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HUB_DATASET = "nyu-mll/glue"
STSB_MIN, STSB_MAX = 0.0, 5.0

_STANDARD_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_STANDARD_HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task: where its data lives, what its labels mean, how it is scored."""

    name: str  # our id: "sst2", "mnli", ...
    hub_config: str  # config name in the hub dataset nyu-mll/glue
    folder: str  # folder name in an original GLUE download: "SST-2", "MNLI", ...
    pair: bool  # True when each example is a sentence pair
    labels: tuple[str, ...] | None  # class names in hub index order; None = regression (STS-B)
    metrics: tuple[str, ...]  # GLUE metric names: accuracy, f1, mcc, pearson, spearman
    main_metric: str  # the one the GLUE leaderboard ranks by (first of `metrics`)
    splits: dict[str, str]  # our split name -> TSV file name in `folder`
    hub_splits: dict[str, str]  # our split name -> hub split name

    # `splits` is a dict, so the generated hash would fail; a task is identified by its name.
    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output width of a head for this task: 1 for regression."""
        return 1 if self.labels is None else len(self.labels)


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
        hub_config=name,
        folder=folder,
        pair=pair,
        labels=labels,
        metrics=metrics,
        main_metric=metrics[0],
        splits=dict(splits or _STANDARD_SPLITS),
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
    """The task called `name`: our id or the GLUE folder name, in any case ("SST-2", "sts-b")."""
    key = _fold(str(name))
    if key not in _ALIASES:
        raise ValueError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[_ALIASES[key]]


def same_task(name: str, task: TaskSpec) -> bool:
    """Whether ``name`` (any spelling get_task accepts; unknown names never match) is ``task``."""
    key = _fold(str(name))
    return key in _ALIASES and _ALIASES[key] == task.name


def dev_splits(task: TaskSpec) -> tuple[str, ...]:
    """The labelled evaluation splits: ("dev",), or MNLI's matched and mismatched pair."""
    return tuple(split for split in task.splits if split.startswith("dev"))


def unlabeled_splits(task: TaskSpec) -> tuple[str, ...]:
    """The leaderboard splits, whose labels are withheld: ("test",), or MNLI's two."""
    return tuple(split for split in task.splits if split.startswith("test"))
