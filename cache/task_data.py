"""Task examples beside a sentence cache: labels and which cached sentences form each example.

A task cache (``pipeline embed --corpus glue:TASK``) is an ordinary sentence cache of the
task's unique sentences, unsplit and unfiltered, plus two kinds of side files listed in the
manifest with their sha256:

* ``task.json``: the task's name, label names, shape (single or pair) and rows per split;
* ``examples-SPLIT.arrow``: one row per example, ``idx`` (the GLUE index), ``label`` (class
  index, -1 when withheld; a float score for regression, NaN when withheld) and the cache
  ``id`` of each sentence (``sentence2_id`` is -1 for single-sentence tasks).

Sentences are stored once however many examples use them, so the teacher ran once per text,
and fine-tuning joins examples to token ids and teacher vectors by id.

A cache made by a teacher fine-tuned on the task (``--outputs logits,...``) also holds
``logits-SPLIT.arrow``: the teacher's logits per example, row for row with
``examples-SPLIT.arrow`` (pairs were encoded jointly, as BERT reads them), and ``task.json``
says which teacher and task they came from. With ``--augment`` a split ``augmented`` holds
unlabelled, teacher-labelled variants of the training examples (Tang et al., 2019).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cache.errors import CacheError
from cache.reader import Cache
from cache.tasks import TaskSpec, get_task, same_task

TASK_NAME = "task.json"
TASK_FORMAT = "sra-task-examples"
TASK_FORMAT_VERSION = 1
AUGMENTED = "augmented"  # the split of augmented training examples, labelled by the teacher


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


def examples_schema(task: TaskSpec) -> pa.Schema:
    label = pa.float32() if task.is_regression else pa.int64()
    return pa.schema(
        [
            pa.field("idx", pa.int64(), nullable=False),
            pa.field("label", label, nullable=False),
            pa.field("sentence1_id", pa.int64(), nullable=False),
            pa.field("sentence2_id", pa.int64(), nullable=False),
        ]
    )


def examples_bytes(
    task: TaskSpec,
    idx: Sequence[int],
    labels: Sequence[float | int | None],
    sentence1_ids: Sequence[int],
    sentence2_ids: Sequence[int] | None,
) -> bytes:
    """One split's examples as an Arrow IPC file (labels None mean withheld)."""
    if task.is_regression:
        label = np.array([np.nan if x is None else x for x in labels], dtype=np.float32)
    else:
        label = np.array([-1 if x is None else x for x in labels], dtype=np.int64)
    second = np.full(len(idx), -1, np.int64) if sentence2_ids is None else sentence2_ids
    table = pa.Table.from_arrays(
        [
            pa.array(np.asarray(idx, np.int64)),
            pa.array(label),
            pa.array(np.asarray(sentence1_ids, np.int64)),
            pa.array(np.asarray(second, np.int64)),
        ],
        schema=examples_schema(task),
    )
    return _ipc_bytes(table)


def task_bytes(task: TaskSpec, rows: dict[str, int], extra: dict | None = None) -> bytes:
    """task.json; ``extra`` adds the ``logits`` (teacher, task, labels) and ``augmentation``
    descriptions where the cache has them."""
    info = {
        "format": TASK_FORMAT,
        "format_version": TASK_FORMAT_VERSION,
        "task": task.name,
        "pair": task.pair,
        "labels": list(task.labels) if task.labels is not None else None,
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


def read_task(cache: Cache) -> TaskData:
    """The task a cache was built for; a plain sentence cache raises CacheError."""
    data = _side_file(cache, TASK_NAME, "pipeline embed --corpus glue:TASK --out DIR")
    try:
        info = json.loads(data)
        assert info["format"] == TASK_FORMAT, "not a task file"
        version = info["format_version"]
        task = get_task(info["task"])
        splits = {str(k): int(v) for k, v in info["splits"].items()}
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise CacheError(f"{cache.path / TASK_NAME} is not a task description ({e})") from None
    if version != TASK_FORMAT_VERSION:
        raise CacheError(
            f"{cache.path / TASK_NAME} has format_version {version}, this code reads "
            f"{TASK_FORMAT_VERSION}: rebuild the task cache with this version"
        )
    if info.get("labels") != (list(task.labels) if task.labels is not None else None):
        raise CacheError(
            f"{cache.path / TASK_NAME} lists labels {info.get('labels')} but {task.name} has "
            f"{task.labels}: rebuild the task cache"
        )
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
    return TaskData(task, splits, logits, info.get("augmentation"))


def read_examples(cache: Cache, split: str) -> pa.Table:
    """One split's examples, checked against the manifest's sha256 and the sentence ids."""
    task = read_task(cache)
    if split not in task.splits:
        have = ", ".join(task.splits) or "none"
        raise CacheError(
            f"task cache {cache.path} has no {split!r} split (it has {have}); rebuild it "
            f"with a GLUE folder that holds {split}"
        )
    name = examples_name(split)
    data = _side_file(cache, name, f"pipeline embed --corpus glue:{task.task.name}")
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
        raise CacheError(
            f"task cache {cache.path} holds no teacher logits for {split!r}; build one with "
            f"`pipeline embed --corpus glue:{task.task.name} --teacher FINETUNED_TEACHER "
            "--outputs logits,mean`"
        )
    name = logits_name(split)
    data = _side_file(cache, name, f"pipeline embed --corpus glue:{task.task.name}")
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
