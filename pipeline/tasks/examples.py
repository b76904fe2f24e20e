"""A task in memory, whatever its source: its definition and its examples per split.

Every task source (GLUE's TSVs or hub dataset in ``glue.py``; a user's own files or hub
dataset in ``own.py``) produces a ``TaskExamples``; ``corpus.py`` embeds its sentences and
writes its examples beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cache.tasks import TaskSpec


@dataclass(slots=True)
class Example:
    """One example. ``label`` is a class index into ``TaskSpec.labels`` (classification), a
    float score (regression) or a tuple of label indices (multilabel); None when withheld."""

    idx: int  # GLUE: the file's index column; else the row's 0-based position in its source
    text_a: str
    text_b: str | None  # None for single-sentence tasks
    label: float | int | tuple[int, ...] | None


@dataclass
class TaskExamples:
    """A task read from its source, checked: what stage one embeds and writes beside it."""

    task: TaskSpec
    examples: dict[str, list[Example]]  # split -> examples, in source order
    source: dict[str, Any]  # JSON-able identity of the data (part of the cache fingerprint)
    # Own tasks: the columns read (text, pair, label, label_separator), kept in task.json so
    # new inputs can be read the same way; None for GLUE.
    columns: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # what was inferred or carved, for the user


def task_sentences(examples_by_split: dict[str, Sequence[Example]]) -> list[str]:
    """Every distinct text (text_a, then text_b) in first-seen order over the splits as given.

    Stage one embeds exactly this list, so it is neither split into sentences nor filtered:
    a task example must find its own text in the cache.
    """
    seen: dict[str, None] = {}
    for examples in examples_by_split.values():
        for example in examples:
            seen.setdefault(example.text_a)
            if example.text_b is not None:
                seen.setdefault(example.text_b)
    return list(seen)
