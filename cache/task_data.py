"""Task examples beside a sentence cache: labels and which cached sentences form each example.

A task cache (``pipeline embed --corpus glue:TASK`` or ``--corpus task:PATH``) is an ordinary
sentence cache of the task's unique sentences, unsplit and unfiltered, plus two kinds of side
files listed in the manifest with their sha256:

* ``task.json``: the task's definition (``cache.tasks.TaskSpec.to_dict``: name, problem,
  shape, label names in index order, metrics, splits, score range), the columns it was read
  from (own tasks) and the rows per split;
* ``examples-SPLIT.arrow``: one row per example, ``idx`` (the GLUE index, else the row's
  0-based position in its source file), ``label`` and the cache ``id`` of each sentence
  (``sentence2_id`` is -1 for single-sentence tasks). ``label`` is, by problem:
  classification, the class index (int64, -1 when withheld); regression, the score (float32,
  NaN when withheld); multilabel, a multi-hot row over the labels (fixed-size list of int8,
  all -1 when withheld). ``example_labels`` returns them as one numpy array.

Sentences are stored once however many examples use them, so the teacher ran once per text,
and fine-tuning joins examples to token ids and teacher vectors by id.

A cache made by a teacher fine-tuned on the task (``--outputs logits,...``) also holds
``logits-SPLIT.arrow``: the teacher's outputs per example (``[examples, num_labels]``: one
per class, one per label for multi-label, one for regression), row for row with
``examples-SPLIT.arrow`` (pairs were encoded jointly, as BERT reads them), and ``task.json``
says which teacher and task they came from. With ``--augment`` a split ``augmented`` holds
unlabelled, teacher-labelled variants of the training examples (Tang et al., 2019).

Format versions: 2 stores the whole definition; 1 (GLUE only, before own tasks) stored the
GLUE task's name, shape and labels, and is still read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cache.errors import CacheError
from cache.reader import Cache
from cache.tasks import TaskSpec, get_task, same_task

TASK_NAME = "task.json"
TASK_FORMAT = "sra-task-examples"
TASK_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: GLUE task caches made before own tasks
AUGMENTED = "augmented"  # the split of augmented training examples, labelled by the teacher

# A label as stage one hands it over: a class index, a score, the label indices of a
# multi-label example, or None when withheld.
Label = int | float | Sequence[int] | None


def examples_name(split: str) -> str:
    return f"examples-{split}.arrow"


def logits_name(split: str) -> str:
    return f"logits-{split}.arrow"


def logits_bytes(logits: np.ndarray) -> bytes:
    """One split's teacher logits, ``[examples, labels]`` float32, as an Arrow IPC file."""
    logits = np.ascontiguousarray(logits, np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), logits.shape[1])
    return _ipc_bytes(pa.Table.from_arrays([column], names=["logits"]))


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def label_type(task: TaskSpec) -> pa.DataType:
    """The ``label`` column's type: class index, score, or multi-hot row (module docstring)."""
    if task.is_regression:
        return pa.float32()
    if task.is_multilabel:
        return pa.list_(pa.int8(), task.num_labels)
    return pa.int64()


def examples_schema(task: TaskSpec) -> pa.Schema:
    return pa.schema(
        [
            pa.field("idx", pa.int64(), nullable=False),
            pa.field("label", label_type(task), nullable=False),
            pa.field("sentence1_id", pa.int64(), nullable=False),
            pa.field("sentence2_id", pa.int64(), nullable=False),
        ]
    )


def examples_bytes(
    task: TaskSpec,
    idx: Sequence[int],
    labels: Sequence[Label],
    sentence1_ids: Sequence[int],
    sentence2_ids: Sequence[int] | None,
) -> bytes:
    """One split's examples as an Arrow IPC file (labels None mean withheld)."""
    second = np.full(len(idx), -1, np.int64) if sentence2_ids is None else sentence2_ids
    table = pa.Table.from_arrays(
        [
            pa.array(np.asarray(idx, np.int64)),
            _label_array(task, labels),
            pa.array(np.asarray(sentence1_ids, np.int64)),
            pa.array(np.asarray(second, np.int64)),
        ],
        schema=examples_schema(task),
    )
    return _ipc_bytes(table)


def _label_array(task: TaskSpec, labels: Sequence[Label]) -> pa.Array:
    if task.is_regression:
        return pa.array(np.array([np.nan if x is None else x for x in labels], dtype=np.float32))
    if not task.is_multilabel:
        return pa.array(np.array([-1 if x is None else x for x in labels], dtype=np.int64))
    hot = np.zeros((len(labels), task.num_labels), np.int8)
    for row, members in enumerate(labels):
        if members is None:
            hot[row] = -1
        else:
            hot[row, list(members)] = 1  # type: ignore[arg-type]
    return pa.FixedSizeListArray.from_arrays(pa.array(hot.reshape(-1)), task.num_labels)


def example_labels(table: pa.Table, task: TaskSpec) -> np.ndarray:
    """A split's ``label`` column as numpy: ``[n]`` int64 class indices (-1 withheld), ``[n]``
    float32 scores (NaN withheld), or ``[n, num_labels]`` int8 multi-hot rows (-1 withheld)."""
    column = table.column("label")
    if not task.is_multilabel:
        return column.to_numpy()
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), task.num_labels)


def task_bytes(task: TaskSpec, rows: dict[str, int], extra: dict | None = None) -> bytes:
    """task.json; ``extra`` adds the ``columns`` an own task was read from and the ``logits``
    (teacher, task, labels) and ``augmentation`` descriptions where the cache has them."""
    info = {
        "format": TASK_FORMAT,
        "format_version": TASK_FORMAT_VERSION,
        "task": task.name,
        "definition": task.to_dict(),
        "splits": rows,
        **(extra or {}),
    }
    return (json.dumps(info, indent=2) + "\n").encode("utf-8")


@dataclass
class TaskData:
    """What ``task.json`` says: the task and how many examples each split holds."""

    task: TaskSpec
    splits: dict[str, int]
    logits: dict | None = None  # teacher, finetuning_task, num_labels, splits: when cached
    augmentation: dict | None = None  # how the `augmented` split was made
    # Own tasks: the columns the examples were read from (text, pair, label, label_separator),
    # so that new inputs can be read the same way. None for GLUE.
    columns: dict | None = None


def read_task(cache: Cache) -> TaskData:
    """The task a cache was built for; a plain sentence cache raises CacheError."""
    data = _side_file(cache, TASK_NAME, "pipeline embed --corpus task:PATH --out DIR")
    path = cache.path / TASK_NAME
    try:
        info = json.loads(data)
        assert info["format"] == TASK_FORMAT, "not a task file"
        version = info["format_version"]
        splits = {str(k): int(v) for k, v in info["splits"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as e:
        raise CacheError(f"{path} is not a task description ({e})") from None
    if version not in READABLE_VERSIONS:
        raise CacheError(
            f"{path} has format_version {version}, this code reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}: rebuild the task cache with this version"
        )
    task = _definition(info, version, path)
    logits = info.get("logits")
    if logits is not None:
        made_for = str(logits.get("finetuning_task") or "")
        if made_for and not same_task(made_for, task):
            raise CacheError(
                f"the logits in {cache.path} come from a teacher fine-tuned on {made_for!r}, "
                f"not {task.name}: rebuild the cache with a teacher fine-tuned on {task.name}"
            )
        if logits.get("num_labels") != task.num_labels:
            raise CacheError(
                f"the logits in {cache.path} have {logits.get('num_labels')} labels but "
                f"{task.name} has {task.num_labels}: rebuild the task cache"
            )
    return TaskData(task, splits, logits, info.get("augmentation"), info.get("columns"))


def _definition(info: dict[str, Any], version: int, path: Any) -> TaskSpec:
    """The task of a task.json: its stored definition (version 2), or, for a GLUE preset, the
    preset itself once the stored labels are checked against it."""
    try:
        if version == 1:  # GLUE only: the name, and the labels to check
            task = get_task(info["task"])
            stored = info.get("labels")
        else:
            task = TaskSpec.from_dict(info["definition"])
            stored = None if task.labels is None else list(task.labels)
            if not task.is_glue:
                return task
            task = get_task(task.name)
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{path} is not a task description ({e})") from None
    if stored != (list(task.labels) if task.labels is not None else None):
        raise CacheError(
            f"{path} lists labels {stored} but {task.name} has {task.labels}: rebuild the "
            "task cache"
        )
    return task


def rebuild_hint(task: TaskSpec) -> str:
    """The stage-one command that makes a cache of this task."""
    if task.is_glue:
        return f"pipeline embed --corpus glue:{task.name}"
    return "pipeline embed --corpus task:PATH"


def read_examples(cache: Cache, split: str) -> pa.Table:
    """One split's examples, checked against the manifest's sha256 and the sentence ids."""
    task = read_task(cache)
    if split not in task.splits:
        have = ", ".join(task.splits) or "none"
        source = "a GLUE folder" if task.task.is_glue else "task data"
        raise CacheError(
            f"task cache {cache.path} has no {split!r} split (it has {have}); rebuild it "
            f"with {source} that holds {split}"
        )
    name = examples_name(split)
    data = _side_file(cache, name, rebuild_hint(task.task))
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except pa.ArrowInvalid as e:
        raise CacheError(f"{cache.path / name} is not an Arrow file ({e})") from None
    if table.schema != examples_schema(task.task):
        raise CacheError(f"{cache.path / name} does not hold {task.task.name} examples")
    ids = np.concatenate(
        [table.column("sentence1_id").to_numpy(), table.column("sentence2_id").to_numpy()]
    )
    if len(ids) and (ids.max() >= cache.num_rows or ids.min() < -1):
        raise CacheError(f"{cache.path / name} points at sentences the cache does not hold")
    return table


def read_logits(cache: Cache, split: str) -> np.ndarray:
    """The teacher's logits for one split, ``[examples, labels]`` float32, checked."""
    task = read_task(cache)
    if task.logits is None or split not in task.logits.get("splits", []):
        corpus = f"glue:{task.task.name}" if task.task.is_glue else "task:PATH"
        raise CacheError(
            f"task cache {cache.path} holds no teacher logits for {split!r}; build one with "
            f"`pipeline embed --corpus {corpus} --teacher FINETUNED_TEACHER "
            "--outputs logits,mean`"
        )
    name = logits_name(split)
    data = _side_file(cache, name, rebuild_hint(task.task))
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        column = table.column("logits").combine_chunks()
        width = column.type.list_size
        values = column.flatten().to_numpy().reshape(-1, width)
    except (pa.ArrowInvalid, KeyError, AttributeError, ValueError) as e:
        raise CacheError(f"{cache.path / name} is not a logits file ({e})") from None
    if width != task.task.num_labels or len(values) != task.splits.get(split):
        raise CacheError(
            f"{cache.path / name} holds {len(values)} x {width} logits, but {split} has "
            f"{task.splits.get(split)} examples of {task.task.num_labels} labels: rebuild it"
        )
    return values


def _side_file(cache: Cache, name: str, fix: str) -> bytes:
    expected = cache.manifest.files.get(name)
    if expected is None:
        raise CacheError(
            f"{cache.path} holds no {name}: it is not a task cache; build one with `{fix}`"
        )
    try:
        data = (cache.path / name).read_bytes()
    except OSError as e:
        raise CacheError(f"cannot read {cache.path / name}: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise CacheError(
            f"{cache.path / name} does not match its checksum in the manifest (corrupt or "
            f"edited); rebuild the task cache"
        )
    return data
