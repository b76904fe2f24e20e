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
from cache.tasks import TaskSpec, get_task

TASK_NAME = "task.json"
TASK_FORMAT = "sra-task-examples"
TASK_FORMAT_VERSION = 1


def examples_name(split: str) -> str:
    return f"examples-{split}.arrow"


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
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def task_bytes(task: TaskSpec, rows: dict[str, int]) -> bytes:
    info = {
        "format": TASK_FORMAT,
        "format_version": TASK_FORMAT_VERSION,
        "task": task.name,
        "pair": task.pair,
        "labels": list(task.labels) if task.labels is not None else None,
        "splits": rows,
    }
    return (json.dumps(info, indent=2) + "\n").encode("utf-8")


@dataclass
class TaskData:
    """What ``task.json`` says: the task and how many examples each split holds."""

    task: TaskSpec
    splits: dict[str, int]


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
    return TaskData(task, splits)


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
