"""A GLUE task as a stage-one corpus: its unique sentences, then its examples as side files.

``pipeline embed --corpus glue:TASK`` embeds every distinct text of the task's splits,
unsplit and unfiltered, in first-seen order, so the cache id of a text is its position in
that list. Once every sentence is in the cache, ``task.json`` and one
``examples-SPLIT.arrow`` per split are written beside the manifest (see cache/task_data.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cache.task_data import AUGMENTED, TASK_NAME, examples_bytes, examples_name, task_bytes
from cache.tasks import TaskSpec, dev_splits, get_task
from pipeline.errors import PipelineError
from pipeline.glue import Example, describe_task_source, read_split, task_sentences

PREFIX = "glue:"
GLUE_DIR_ENV = "GLUE_DIR"


def is_task_corpus(corpus: str) -> bool:
    return corpus.strip().lower().startswith(PREFIX)


@dataclass
class TaskCorpus:
    task: TaskSpec
    glue_dir: Path | None
    examples: dict[str, list[Example]]  # split -> examples, in file order
    sentences: list[str]  # what stage one embeds; a text's cache id is its index here
    extra: dict[str, Any] = field(default_factory=dict)  # task.json's logits / augmentation

    def describe(self) -> dict[str, Any]:
        return describe_task_source(
            self.task, self.glue_dir, [s for s in self.examples if s != AUGMENTED]
        )

    def with_augmented(self, augmented: list[Example], description: dict[str, Any]) -> TaskCorpus:
        """The corpus plus a split of augmented examples; their new texts go after all others,
        so every original sentence keeps its id."""
        examples = {**self.examples, AUGMENTED: augmented}
        extra = {**self.extra, "augmentation": description}
        return replace(self, examples=examples, sentences=task_sentences(examples), extra=extra)

    def side_files(self) -> dict[str, bytes]:
        """task.json and the examples of every split, joined to sentence ids by text."""
        position = {text: i for i, text in enumerate(self.sentences)}
        files = {}
        for split, examples in self.examples.items():
            files[examples_name(split)] = examples_bytes(
                self.task,
                [e.idx for e in examples],
                [e.label for e in examples],
                [position[e.text_a] for e in examples],
                [position[e.text_b] for e in examples] if self.task.pair else None,  # type: ignore[index]
            )
        rows = {split: len(examples) for split, examples in self.examples.items()}
        files[TASK_NAME] = task_bytes(self.task, rows, self.extra)
        return files


def load_task_corpus(corpus: str, glue_dir: str | Path | None) -> TaskCorpus:
    """Read every split of `glue:TASK` that exists; train and dev must."""
    name = corpus.strip()[len(PREFIX) :]
    try:
        task = get_task(name)
    except ValueError as e:
        raise PipelineError(str(e)) from None
    folder = glue_dir or os.environ.get(GLUE_DIR_ENV) or None
    path = Path(folder) if folder else None
    required = ["train", *dev_splits(task)]
    if path is None:
        splits = list(task.hub_splits)
    else:
        present = {s for s in task.splits if (path / task.folder / task.splits[s]).is_file()}
        # Missing train or dev files get read_split's one-line explanation below.
        splits = [s for s in task.splits if s in present or s in required]
    examples = {split: read_split(task, split, path) for split in splits}
    for split in required:
        if not examples[split]:
            raise PipelineError(f"{task.name} split {split!r} has no examples")
        if any(e.label is None for e in examples[split]):
            raise PipelineError(f"{task.name} split {split!r} has examples without a label")
    return TaskCorpus(task, path, examples, task_sentences(examples))
