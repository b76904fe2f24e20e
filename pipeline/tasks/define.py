"""An own task from its tables: columns, problem, label set, examples, a carved dev split.

``define_task`` turns the tables of a task's splits (``tables.py``; train required, dev and
test optional) into a checked ``TaskExamples``, in named steps:

1. **columns**: the text column (and the pair column, for sentence pairs) and the label
   column must exist in every split that needs them; a missing one is named with the columns
   the file has;
2. **texts**: every text a non-empty string; a pair task needs both texts in every row;
3. **labels**: each cell read as a number, a string, a list (multi-label) or nothing;
4. **problem**: ``--problem``, or inferred (lists or ``--label-separator``: multilabel; every
   label a number and not a small set of integers: regression; else classification) and
   the inference printed;
5. **dev**: when the task has no dev split, a seeded, stratified share of train is carved
   into one (``carve``), and that is printed;
6. **definition**: the label set from train in its documented order (``label_order``), or
   the score range of train; a dev or test label never seen in train is refused.

Every problem is one SraError line naming the file and line, raised before anything loads
or is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cache.errors import SraError
from cache.tasks import (
    CLASSIFICATION,
    MULTILABEL,
    REGRESSION,
    TaskSpec,
    label_order,
    number_name,
    own_task,
)
from pipeline.tasks.examples import Example, TaskExamples
from pipeline.tasks.tables import Table

if TYPE_CHECKING:
    from pipeline.tasks.own import TaskDataOptions

# Integer labels with at most this many distinct values are classes, not scores.
MAX_INTEGER_CLASSES = 20
REGRESSION_BINS = 10  # a regression dev split is stratified over this many score quantiles
DEFAULT_PAIR_COLUMN = "text_pair"

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

Scalar = str | int | float
Raw = Scalar | tuple[Scalar, ...] | None  # one label cell, read


@dataclass
class _Split:
    """One split's rows as read: texts and raw labels (None: the row has no label)."""

    table: Table
    idx: list[int]
    text_a: list[str]
    text_b: list[str] | None
    labels: list[Raw] | None  # None: the split has no label column (withheld)

    def subset(self, rows: Sequence[int]) -> _Split:
        pick = list(rows)
        return _Split(
            self.table,
            [self.idx[i] for i in pick],
            [self.text_a[i] for i in pick],
            None if self.text_b is None else [self.text_b[i] for i in pick],
            None if self.labels is None else [self.labels[i] for i in pick],
        )

    def where(self, row: int) -> str:
        return self.table.where(self.idx[row])


def define_task(
    name: str,
    tables: dict[str, Table],
    options: TaskDataOptions,
    source: dict[str, Any],
) -> TaskExamples:
    """The task in ``tables`` (split -> table; "train" required), checked (module docstring)."""
    pair_column = _pair_column(tables["train"], options)
    splits = {
        split: _read_split(split, table, options, pair_column) for split, table in tables.items()
    }
    problem, reason = _problem(splits, options, tables["train"].label_names)
    notes = [f"task {name}: {problem}, {reason}"] if reason else []
    if "dev" not in splits:
        train, dev, note = _carve_dev(splits["train"], problem, options)
        splits = {"train": train, "dev": dev, **{k: v for k, v in splits.items() if k != "train"}}
        notes.append(f"task {name}: {note}")
    ordered = {s: splits[s] for s in ("train", "dev", "test") if s in splits}
    try:
        task, examples = _definition(name, problem, ordered, pair_column is not None, tables)
    except ValueError as e:  # the definition refused itself (cache.tasks.TaskSpec.check)
        raise SraError(f"task {name}: {e}") from None
    notes.append(_summary(task, examples))
    columns = {
        "text": options.text_column,
        "pair": pair_column,
        "label": options.label_column,
        "label_separator": options.label_separator,
    }
    return TaskExamples(task, examples, source, columns, notes)


# ---------------------------------------------------------------------------- columns, texts


def _pair_column(train: Table, options: TaskDataOptions) -> str | None:
    """The pair column: --pair-column (which must exist), else text_pair where train has it."""
    if options.pair_column is not None:
        return options.pair_column
    return DEFAULT_PAIR_COLUMN if DEFAULT_PAIR_COLUMN in train.columns else None


def _column(table: Table, column: str, option: str) -> list[Any]:
    if column not in table.columns:
        raise SraError(
            f"{table.name} has no column {column!r} (it has: {', '.join(table.columns)}); "
            f"pass {option} to name the right one"
        )
    return table.columns[column]


def _read_split(
    split: str, table: Table, options: TaskDataOptions, pair_column: str | None
) -> _Split:
    text_a, text_b = input_texts(table, options.text_column, pair_column)
    labels = None
    if split != "test" or options.label_column in table.columns:
        values = _column(table, options.label_column, "--label-column")
        labels = [_label(v, table, row, options.label_separator) for row, v in enumerate(values)]
        missing = [row for row, label in enumerate(labels) if label is None]
        if split == "test" and len(missing) == len(labels):
            labels = None  # an empty label column: the test labels are withheld
        elif missing:
            raise SraError(
                f"{table.where(missing[0])}: no label in column {options.label_column!r}"
                + (
                    f" (test rows are labelled all or none: {len(missing):,} of "
                    f"{len(labels):,} have none)"
                    if split == "test"
                    else "; every train and dev example needs one"
                )
            )
    return _Split(table, list(range(table.num_rows)), text_a, text_b, labels)


def input_texts(
    table: Table, text_column: str, pair_column: str | None
) -> tuple[list[str], list[str] | None]:
    """The texts of a table (and the second texts of a pair task), checked: a missing column
    is named with the columns the file has, an empty text refused with its line. Task splits
    are read with it, and so can new inputs to a trained model be."""
    text_a = _texts(table, _column(table, text_column, "--text-column"), "text")
    if pair_column is None:
        return text_a, None
    values = _column(table, pair_column, "--pair-column")
    return text_a, _texts(table, values, f"pair ({pair_column!r})", pair=True)


def _texts(table: Table, values: list[Any], what: str, pair: bool = False) -> list[str]:
    for row, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            hint = (
                " (the pair column is present in some rows only: a pair task needs both texts "
                "in every row)"
                if pair
                else "; every example needs one"
            )
            raise SraError(f"{table.where(row)}: empty {what} text{hint}")
        if not isinstance(value, str):
            raise SraError(
                f"{table.where(row)}: the {what} text is a {type(value).__name__}, not a string"
            )
    return values


# ---------------------------------------------------------------------------- labels


def _label(value: Any, table: Table, row: int, separator: str | None) -> Raw:
    """One label cell: a scalar, a tuple (multi-label), or None (no label)."""
    if table.label_names is not None:
        return _named(value, table, row)
    if isinstance(value, list | tuple):
        return tuple(_member(v, table, row) for v in value)
    if separator is not None and isinstance(value, str):
        return tuple(_member(part, table, row) for part in value.split(separator) if part.strip())
    scalar = _scalar(value, table, row)
    if separator is not None and scalar is not None:
        return (scalar,)  # a lone number in a multi-label column: a list of one
    return scalar


def _named(value: Any, table: Table, row: int) -> Raw:
    # A hub ClassLabel: indices into the dataset's names; -1 marks a withheld label.
    names = table.label_names or ()
    if isinstance(value, list | tuple):
        return tuple(_named(v, table, row) for v in value)  # type: ignore[misc]
    if value is None or value == -1:
        return None
    if not isinstance(value, int) or not 0 <= value < len(names):
        raise SraError(f"{table.where(row)}: label {value!r} is not a class index of {names}")
    return names[value]


def _member(value: Any, table: Table, row: int) -> Scalar:
    member = _scalar(value, table, row)
    if member is None:
        raise SraError(f"{table.where(row)}: an empty label inside a label list")
    return member


def _scalar(value: Any, table: Table, row: int) -> Scalar | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _NUMBER.fullmatch(text):
            return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        return text
    raise SraError(
        f"{table.where(row)}: label {value!r} is a {type(value).__name__}, not a string, number "
        "or list"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def _problem(
    splits: dict[str, _Split], options: TaskDataOptions, names: tuple[str, ...] | None
) -> tuple[str, str]:
    """The task's problem and, when inferred, why (printed for the user)."""
    found = [
        (split, row, label)
        for split, data in splits.items()
        for row, label in enumerate(data.labels or [])
    ]
    lists = [f for f in found if isinstance(f[2], tuple)]
    if lists and len(lists) != len(found):
        split, row, label = next(f for f in found if not isinstance(f[2], tuple))
        raise SraError(
            f"{splits[split].where(row)}: label {label!r} is a single value but other rows hold "
            "lists; give every row a list (multi-label) or none"
        )
    members = [m for _, _, label in found for m in (label if isinstance(label, tuple) else [label])]
    asked = options.problem
    if names is None and asked == "auto":
        _refuse_mixed(splits, found)
    if asked == REGRESSION:
        if lists or names is not None:
            raise SraError("--problem regression needs one number per example, not class labels")
        for split, row, label in found:
            if not _is_number(label) or not math.isfinite(label):  # type: ignore[arg-type]
                raise SraError(
                    f"{splits[split].where(row)}: regression label {label!r} is not a number"
                )
        return REGRESSION, ""
    if asked == MULTILABEL:
        if not lists and options.label_separator is None:
            raise SraError(
                "--problem multilabel needs list labels (JSONL or Parquet lists) or "
                "--label-separator to split string labels"
            )
        return MULTILABEL, ""
    if asked == CLASSIFICATION:
        if lists:
            raise SraError("labels are lists (several per example): use --problem multilabel")
        return CLASSIFICATION, ""
    # auto
    if lists or options.label_separator is not None:
        why = "--label-separator" if options.label_separator is not None else "label lists"
        return MULTILABEL, f"inferred from {why}"
    if names is not None:
        return CLASSIFICATION, f"inferred: the dataset's labels are classes ({', '.join(names)})"
    if members and all(_is_number(m) for m in members):
        distinct = {float(m) for m in members}
        integers = all(m.is_integer() for m in distinct)
        if integers and len(distinct) <= MAX_INTEGER_CLASSES:
            return CLASSIFICATION, (
                f"inferred: every label is one of {len(distinct)} integers; pass --problem "
                "regression to predict them as numbers"
            )
        what = "not all integers"
        if integers:
            what = f"more than {MAX_INTEGER_CLASSES} distinct integers"
        return REGRESSION, (
            f"inferred: every label is a number, {what}; pass --problem classification to "
            "treat them as classes"
        )
    return CLASSIFICATION, ""


def _refuse_mixed(splits: dict[str, _Split], found: list[tuple[str, int, Raw]]) -> None:
    number = text = None
    for split, row, label in found:
        for m in label if isinstance(label, tuple) else (label,):
            if _is_number(m) and number is None:
                number = (m, splits[split].where(row))
            elif not _is_number(m) and text is None:
                text = (m, splits[split].where(row))
    if number is None or text is None:
        return
    raise SraError(
        f"labels mix numbers ({number[0]!r} at {number[1]}) and strings ({text[0]!r} at "
        f"{text[1]}); fix the data, or pass --problem classification (or multilabel) to treat "
        "every label as a class name"
    )


# ---------------------------------------------------------------------------- dev split


def carve(keys: Sequence[Hashable], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split rows into (kept, carved), stratified by ``keys``, seeded; both in row order.

    The carved share is ``round(n * fraction)`` rows, spread over the groups of equal key in
    proportion to their size (largest remainders first, ties to the first-seen group), never
    taking the last row of a group, so every key stays among the kept rows. Which rows of a
    group go is a seeded shuffle (``numpy.random.default_rng(seed)``, groups in first-seen
    order).
    """
    groups: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    members = list(groups.values())
    target = max(1, round(len(keys) * fraction))
    exact = [len(g) * fraction for g in members]
    quota = [min(math.floor(x), len(g) - 1) for x, g in zip(exact, members, strict=True)]
    by_remainder = sorted(range(len(members)), key=lambda i: -(exact[i] - quota[i]))
    for i in by_remainder:
        if sum(quota) >= target:
            break
        if quota[i] < len(members[i]) - 1:
            quota[i] += 1
    rng = np.random.default_rng(seed)
    carved: list[int] = []
    for group, take in zip(members, quota, strict=True):
        order = rng.permutation(len(group))
        carved += [group[i] for i in order[:take]]
    out = set(carved)
    return [r for r in range(len(keys)) if r not in out], sorted(carved)


def score_bins(scores: Sequence[float], bins: int = REGRESSION_BINS) -> list[int]:
    """Each score's quantile bin (0 .. bins-1), ties broken by row: strata for a regression."""
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    out = [0] * len(scores)
    for rank, row in enumerate(order):
        out[int(row)] = rank * bins // len(scores)
    return out


def _strata(labels: list[Raw], problem: str) -> list[Hashable]:
    if problem == REGRESSION:
        return list(score_bins([float(x) for x in labels]))  # type: ignore[arg-type]
    if problem == MULTILABEL:
        return [frozenset(_name(m) for m in x) for x in labels]  # type: ignore[union-attr]
    return [_name(x) for x in labels]  # type: ignore[arg-type]


def _carve_dev(train: _Split, problem: str, options: TaskDataOptions) -> tuple[_Split, _Split, str]:
    assert train.labels is not None
    kept, carved = carve(_strata(train.labels, problem), options.dev_fraction, options.dev_seed)
    if not carved:
        raise SraError(
            f"{train.table.name} has no dev split and too few examples to carve one (every "
            "label occurs once); add a dev file"
        )
    by = {CLASSIFICATION: "label", MULTILABEL: "label set", REGRESSION: "score decile"}[problem]
    note = (
        f"no dev split: carved {len(carved):,} of {len(train.idx):,} training examples into one "
        f"(--dev-fraction {options.dev_fraction:g}, --dev-seed {options.dev_seed}, stratified "
        f"by {by})"
    )
    return train.subset(kept), train.subset(carved), note


# ---------------------------------------------------------------------------- definition


def _name(value: Scalar) -> str:
    return number_name(value) if _is_number(value) else str(value)  # type: ignore[arg-type]


def _definition(
    name: str,
    problem: str,
    splits: dict[str, _Split],
    pair: bool,
    tables: dict[str, Table],
) -> tuple[TaskSpec, dict[str, list[Example]]]:
    train = splits["train"]
    assert train.labels is not None
    given = tables["train"].label_names
    if problem == REGRESSION:
        for data in splits.values():
            for row, label in enumerate(data.labels or []):
                if not math.isfinite(label):  # type: ignore[arg-type]
                    raise SraError(f"{data.where(row)}: regression label {label!r} is not finite")
        scores = [float(x) for x in train.labels]  # type: ignore[arg-type]
        low, high = min(scores), max(scores)
        if low == high:
            raise SraError(
                f"{train.table.name}: every training score is {low:g}; a regression task needs "
                "at least two different scores"
            )
        task = own_task(name, problem, pair, None, (low, high), splits)

        def convert(label: Raw, split: _Split, row: int) -> float | int | tuple[int, ...]:
            return float(label)  # type: ignore[arg-type]

    else:
        members = [m for x in train.labels for m in (x if isinstance(x, tuple) else (x,))]
        if given is not None:
            labels = given  # a hub ClassLabel: the dataset's names, in its order
        elif all(_is_number(m) for m in members):
            labels = label_order(members)  # type: ignore[arg-type]
        else:
            labels = label_order(_name(m) for m in members)  # type: ignore[arg-type]
        if problem == CLASSIFICATION and len(labels) < 2:
            raise SraError(
                f"{train.table.name}: every training label is {labels[0] if labels else None!r}; "
                "a classifier needs at least two classes"
            )
        if problem == MULTILABEL and not labels:
            raise SraError(f"{train.table.name}: no training example has a label")
        task = own_task(name, problem, pair, labels, None, splits)
        index = {label: i for i, label in enumerate(labels)}

        def convert(label: Raw, split: _Split, row: int) -> float | int | tuple[int, ...]:
            if isinstance(label, tuple):
                return tuple(sorted({_index(index, m, split, row, labels) for m in label}))
            return _index(index, label, split, row, labels)  # type: ignore[arg-type]

    examples = {
        s: [
            Example(
                data.idx[row],
                data.text_a[row],
                None if data.text_b is None else data.text_b[row],
                None if data.labels is None else convert(data.labels[row], data, row),
            )
            for row in range(len(data.idx))
        ]
        for s, data in splits.items()
    }
    return task, examples


def _index(
    index: dict[str, int], label: Scalar, split: _Split, row: int, labels: Sequence[str]
) -> int:
    key = _name(label)
    if key not in index:
        shown = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "")
        raise SraError(
            f"{split.where(row)}: label {key!r} never occurs in train (train has: {shown}); "
            "a model cannot learn a label it never saw"
        )
    return index[key]


def _summary(task: TaskSpec, examples: dict[str, list[Example]]) -> str:
    if task.labels is None:
        low, high = task.score_range
        what = f"scores from {low:g} to {high:g} in train"
    else:
        shown = ", ".join(task.labels[:10]) + (", ..." if len(task.labels) > 10 else "")
        what = f"{len(task.labels)} labels ({shown})"
    counts = " / ".join(
        f"{len(rows):,} {split}"
        + ("" if split != "test" or rows[0].label is not None else " (unlabelled)")
        for split, rows in examples.items()
    )
    shape = "sentence pairs" if task.pair else "single sentences"
    return f"task {task.name}: {task.problem}, {what}, {shape}; {counts} examples"
