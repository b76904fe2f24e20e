"""A task as a stage-one corpus: its unique sentences, then its examples as side files.

``pipeline embed --corpus glue:TASK`` (a GLUE preset, ``glue.py``) or ``--corpus task:PATH``
(a user's own data, ``own.py``) embeds every distinct text of the task's splits, unsplit
and unfiltered, in first-seen order, so the cache id of a text is its position in that list.
Once every sentence is in the cache, ``task.json`` and one ``examples-SPLIT.arrow`` per split
are written beside the manifest (see cache/task_data.py), then, with ``logits``, a
fine-tuned teacher's logits per split.

Stage one knows none of this: ``embed_task`` reads the task, then calls ``embed()`` with a
``TaskExtension`` (the hook ``pipeline.embedding.Extension``) that supplies the texts and
writes the side files.

    from pipeline import EmbedConfig
    from pipeline.tasks import TaskOptions, embed_task
    embed_task(EmbedConfig(corpus="glue:sst2", out="caches/sst2"), TaskOptions(glue_dir="glue"))
    embed_task(EmbedConfig(corpus="task:data/tickets", out="caches/tickets"), TaskOptions())
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache import CacheWriter, Manifest
from cache.errors import SraError
from cache.options import nested, option
from cache.task_data import (
    AUGMENTED,
    TASK_NAME,
    examples_bytes,
    examples_name,
    logits_bytes,
    logits_name,
    task_bytes,
)
from cache.tasks import TaskSpec
from pipeline.distributed import dist_env
from pipeline.embedding import EmbedConfig, embed
from pipeline.tasks.augment import AugmentConfig, Neighbours, augment_examples
from pipeline.tasks.examples import Example, TaskExamples, task_sentences
from pipeline.tasks.glue import load_glue
from pipeline.tasks.own import TaskDataOptions, is_own_task, load_own_task

if TYPE_CHECKING:
    from pipeline.teacher import Teacher

PREFIX = "glue:"  # GLUE presets; own tasks are "task:..." (own.py)
GLUE_DIR_ENV = "GLUE_DIR"


def is_task_corpus(corpus: str) -> bool:
    return corpus.strip().lower().startswith(PREFIX) or is_own_task(corpus)


@dataclass
class TaskCorpus:
    task: TaskSpec
    examples: dict[str, list[Example]]  # split -> examples, in source order
    sentences: list[str]  # what stage one embeds; a text's cache id is its index here
    source: dict[str, Any]  # JSON-able identity of the task's data, for the fingerprint
    extra: dict[str, Any] = field(default_factory=dict)  # task.json's columns/logits/augmentation

    @classmethod
    def of(cls, loaded: TaskExamples) -> TaskCorpus:
        extra = {} if loaded.columns is None else {"columns": loaded.columns}
        return cls(
            loaded.task, loaded.examples, task_sentences(loaded.examples), loaded.source, extra
        )

    def describe(self) -> dict[str, Any]:
        return self.source

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


def load_task_corpus(
    corpus: str, glue_dir: str | Path | None = None, data: TaskDataOptions | None = None
) -> TaskCorpus:
    """Read and check every split of a task corpus: ``glue:TASK`` (from ``glue_dir``, else
    $GLUE_DIR, else the hub) or an own task (``task:PATH``, ``task:hf:NAME``, or ``task`` with
    ``data``'s files), read as ``data`` says. What was inferred is printed."""
    data = data or TaskDataOptions()
    if is_own_task(corpus):
        loaded = load_own_task(corpus, data)
        for note in loaded.notes:
            print(note, file=sys.stderr)
    else:
        given = data.given()
        if given:
            raise SraError(
                f"{', '.join(given)} read a task: corpus; {corpus} is a GLUE task with its own "
                "columns and labels"
            )
        folder = glue_dir or os.environ.get(GLUE_DIR_ENV) or None
        loaded = load_glue(corpus.strip()[len(PREFIX) :], folder)
    return TaskCorpus.of(loaded)


@dataclass(frozen=True)
class TaskOptions:
    """The options of `pipeline embed` that only task corpora (glue:TASK, task:PATH) take."""

    glue_dir: str | None = option(
        None,
        "Original GLUE folder (holding SST-2/, MRPC/, ...) for glue:TASK; default: $GLUE_DIR, "
        "else the hub's nyu-mll/glue.",
    )
    logits: bool = option(
        False,
        "Task corpora: also cache the logits of a teacher fine-tuned on the task (the same as "
        "`logits` in --outputs).",
    )
    data: TaskDataOptions = nested(TaskDataOptions)
    augment: AugmentConfig = nested(AugmentConfig)

    @property
    def any(self) -> bool:
        return self.logits or self.augment.copies > 0 or bool(self.data.given())


def embed_corpus(cfg: EmbedConfig, options: TaskOptions | None = None) -> Manifest:
    """`pipeline embed`: a task corpus through `embed_task`, any other straight to `embed`."""
    options = options or TaskOptions()
    if is_task_corpus(cfg.corpus):
        return embed_task(cfg, options)
    if options.any:
        raise SraError(
            "logits, --augment and the task data options are per task example: use them with "
            "--corpus glue:TASK or task:PATH"
        )
    return embed(cfg)


def embed_task(cfg: EmbedConfig, options: TaskOptions) -> Manifest:
    """Stage one over a task's sentences, then its examples (and logits) beside them."""
    if cfg.limit is not None or dist_env()[1] > 1:
        raise SraError("a task corpus is embedded whole, in one process: drop --limit and torchrun")
    # Read and check every split now, before the teacher loads or --out is touched.
    corpus = load_task_corpus(cfg.corpus, options.glue_dir, options.data)
    options.augment.check(corpus.task)
    return embed(cfg, TaskExtension(corpus, options))


class TaskExtension:
    """The task layer's hook into stage one (`pipeline.embedding.Extension`)."""

    def __init__(self, corpus: TaskCorpus, options: TaskOptions) -> None:
        self.corpus = corpus
        self.options = options
        self.wants_logits = options.logits

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"task": self.corpus.describe()}
        if self.options.augment.copies:
            info["augmentation"] = self.options.augment.describe(self.corpus.task)
        return info

    def check(self, teacher: Teacher) -> None:
        from pipeline.tasks.logits import check_logits_teacher

        if self.options.logits:
            check_logits_teacher(teacher, self.corpus.task)

    def texts(self, teacher: Teacher) -> list[str]:
        # Augmented variants only now: a complete cache needs none (the fingerprint already
        # covers the augmentation config), and building them takes a while on large tasks.
        if self.options.augment.copies:
            self.corpus = augment_task(self.corpus, teacher, self.options.augment)
        return self.corpus.sentences

    def finish(self, writer: CacheWriter, teacher: Teacher, budget: int) -> None:
        write_task_files(writer, self.corpus, teacher if self.options.logits else None, budget)


def write_task_files(
    writer: CacheWriter, task: TaskCorpus, teacher: Teacher | None, budget: int
) -> None:
    """The examples of each split, once every sentence they point at is in the cache; then the
    teacher's logits per split (each split's file is a resume point); task.json last."""
    assert writer.manifest is not None
    rows = writer.manifest.num_rows
    if rows != len(task.sentences):  # ids are positions in task.sentences: all must be there
        raise SraError(
            f"{writer.path} holds {rows:,} of the task's {len(task.sentences):,} sentences; "
            "rerun the same command to resume"
        )
    if teacher is not None:
        task.extra["logits"] = {
            "teacher": teacher.name,
            "finetuning_task": teacher.finetuning_task or task.task.name,
            "num_labels": teacher.num_labels,
            "splits": list(task.examples),
        }
    files = task.side_files()
    for name, data in files.items():
        if name != TASK_NAME:
            writer.put_file(name, data)
    if teacher is not None:
        for split, examples in task.examples.items():
            if logits_name(split) in writer.manifest.files:
                continue  # written before an interruption; the fingerprint vouches for it
            from pipeline.tasks.logits import example_logits

            t0 = time.monotonic()
            logits = example_logits(teacher, examples, budget)
            writer.put_file(logits_name(split), logits_bytes(logits))
            print(
                f"{split}: logits of {len(examples):,} examples in {time.monotonic() - t0:.0f} s",
                file=sys.stderr,
            )
    writer.put_file(TASK_NAME, files[TASK_NAME])


def augment_task(task: TaskCorpus, teacher: Teacher, cfg: AugmentConfig) -> TaskCorpus:
    """The task plus augmented training examples (augment.py), deterministic by seed."""
    train = task.examples["train"]
    neighbours = None
    if "replace" in cfg.resolved_modes(task.task):
        words = (w for e in train for t in (e.text_a, e.text_b or "") for w in t.split())
        neighbours = Neighbours(
            teacher.backend.get_vocab(with_added_tokens=False),
            teacher.embedding_matrix(),
            words,
            cfg.neighbours,
            list(teacher.special_ids.values()),
        )
    mask_id = teacher.special_ids.get("mask")
    mask = teacher.backend.id_to_token(mask_id) if mask_id is not None else "[MASK]"
    augmented = augment_examples(train, task.task, cfg, neighbours, mask)
    print(
        f"augmentation: {len(augmented):,} variants of {len(train):,} training examples",
        file=sys.stderr,
    )
    return task.with_augmented(augmented, cfg.describe(task.task))
