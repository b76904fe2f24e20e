"""Own tasks: a user's labelled data as a task, from a folder, explicit files or the hub.

Three sources, one result (``TaskExamples``, as GLUE's ``load_glue`` gives):

* ``task:PATH``: a folder holding ``train`` and ``dev`` (optionally ``test``) files, each
  ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet``, optionally ``.gz`` (``tables.py``). ``dev``
  may be named ``validation``, ``valid`` or ``val``; other files are ignored.
* ``task`` with ``--train F [--dev F] [--test F]``: the files named.
* ``task:hf:NAME[:CONFIG]``: a Hugging Face dataset (a hub name or a local folder of data
  files), its ``train``, ``validation`` (or ``dev``) and ``test`` splits.

The tables then become a task in ``define.py`` (columns, problem, labels, a carved dev).

    from pipeline.tasks.own import TaskDataOptions, load_own_task
    task = load_own_task("task:data/tickets", TaskDataOptions(label_column="queue"))
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cache.errors import SraError
from cache.options import option
from cache.tasks import PROBLEMS, is_glue_name
from pipeline.tasks.define import define_task
from pipeline.tasks.examples import TaskExamples
from pipeline.tasks.tables import Table, file_format, read_table

PREFIX = "task:"
HF_PREFIX = "hf:"
# File stems (and hub split names) that name each of our splits.
SPLIT_NAMES = {
    "train": "train",
    "dev": "dev",
    "validation": "dev",
    "valid": "dev",
    "val": "dev",
    "test": "test",
}
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class TaskDataOptions:
    """How an own task's data (``--corpus task:...``) is read: files, columns, problem."""

    train: str | None = option(
        None, "With --corpus task: the training file (.csv/.tsv/.jsonl/.parquet[.gz])."
    )
    dev: str | None = option(None, "With --corpus task: the dev file (default: carved from train).")
    test: str | None = option(None, "With --corpus task: the test file (optional).")
    task_name: str | None = option(
        None, "Name of a task: corpus (default: its folder's or dataset's name)."
    )
    text_column: str = option("text", "task: corpora: the column holding the text.")
    pair_column: str | None = option(
        None, "task: corpora: the second text of a pair (default: text_pair where present)."
    )
    label_column: str = option("label", "task: corpora: the label column.")
    problem: str = option("auto", "task: corpora: auto | classification | multilabel | regression.")
    label_separator: str | None = option(
        None, "task: corpora: split string labels on this into several (multi-label)."
    )
    dev_fraction: float = option(
        0.1, "task: corpora without a dev split: share of train carved into one (stratified)."
    )
    dev_seed: int = option(0, "Seed of that carving.")

    def __post_init__(self) -> None:
        if self.problem not in ("auto", *PROBLEMS):
            raise SraError(f"--problem must be auto, {', '.join(PROBLEMS)}; got {self.problem!r}")
        if not 0 < self.dev_fraction < 1:
            raise SraError(f"--dev-fraction must be between 0 and 1, got {self.dev_fraction}")
        if self.label_separator == "":
            raise SraError("--label-separator must not be empty")
        for name in ("text_column", "pair_column", "label_column", "task_name"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                raise SraError(f"--{name.replace('_', '-')} must not be empty")

    def given(self) -> list[str]:
        """The options set to something else than their default, as flags."""
        default = TaskDataOptions()
        return [
            f"--{f.name.replace('_', '-')}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]

    def reading(self) -> dict[str, Any]:
        """The options that decide what the examples are (part of the cache's identity)."""
        keys = ("text_column", "pair_column", "label_column", "problem", "label_separator")
        return {k: getattr(self, k) for k in keys} | {
            "dev_fraction": self.dev_fraction,
            "dev_seed": self.dev_seed,
        }


def is_own_task(corpus: str) -> bool:
    text = corpus.strip()
    return text.lower().startswith(PREFIX) or text.lower() == "task"


def load_own_task(corpus: str, options: TaskDataOptions) -> TaskExamples:
    """Read and check an own task (module docstring); every problem is one SraError line."""
    spec = corpus.strip()[len(PREFIX) :] if corpus.strip().lower() != "task" else ""
    files = {s: getattr(options, s) for s in ("train", "dev", "test") if getattr(options, s)}
    if spec and files:
        raise SraError(
            f"--corpus {corpus} names the data and so do --{', --'.join(files)}: give either "
            "task:PATH (a folder) or --corpus task with --train/--dev/--test"
        )
    if spec.lower().startswith(HF_PREFIX):
        name, tables, source = _from_hub(spec[len(HF_PREFIX) :], options.label_column)
    elif spec:
        name, tables, source = _from_folder(Path(spec))
    elif files:
        if "train" not in files:
            raise SraError("--corpus task with --dev/--test needs --train FILE too")
        name, tables, source = _from_files({s: Path(f) for s, f in files.items()})
    else:
        raise SraError(
            "--corpus task needs data: task:PATH (a folder with train/dev[/test] files), "
            "task:hf:NAME[:CONFIG], or --train FILE [--dev FILE] [--test FILE]"
        )
    name = _task_name(options.task_name or name)
    source = {"task": name, **source, "read": options.reading()}
    return define_task(name, tables, options, source)


def _task_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    if not clean:
        raise SraError(f"cannot make a task name of {name!r}; pass --task-name")
    if is_glue_name(clean):
        raise SraError(
            f"task name {clean!r} is a GLUE task's; pass --task-name to name your own task "
            "otherwise (or use --corpus glue:TASK for GLUE itself)"
        )
    return clean


# ---------------------------------------------------------------------------- files


def split_files(folder: Path) -> dict[str, Path]:
    """The split files of a task folder: split -> file (module docstring), checked."""
    if not folder.exists():
        raise SraError(f"task folder {folder} does not exist")
    if not folder.is_dir():
        raise SraError(
            f"task:{folder} is a file; task:PATH takes a folder holding train/dev[/test] files "
            "(for single files: --corpus task --train FILE --dev FILE)"
        )
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        stem = path.name.split(".")[0].lower()
        if path.is_file() and file_format(path) is not None and stem in SPLIT_NAMES:
            found.setdefault(SPLIT_NAMES[stem], []).append(path)
    for split, paths in found.items():
        if len(paths) > 1:
            raise SraError(
                f"task folder {folder} has {len(paths)} {split} files "
                f"({', '.join(p.name for p in paths)}); keep one"
            )
    if "train" not in found:
        have = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise SraError(
            f"task folder {folder} has no train file (train.csv, .tsv, .jsonl or .parquet, "
            f"optionally .gz); it holds: {have}"
        )
    return {split: paths[0] for split, paths in found.items()}


def _from_folder(folder: Path) -> tuple[str, dict[str, Table], dict[str, Any]]:
    paths = split_files(folder)
    return folder.resolve().name, _read(paths), {"source": "folder", "files": _describe(paths)}


def _from_files(paths: dict[str, Path]) -> tuple[str, dict[str, Table], dict[str, Any]]:
    for split, path in paths.items():
        if not path.is_file():
            raise SraError(f"--{split} {path}: no such file")
    name = paths["train"].resolve().parent.name
    return name, _read(paths), {"source": "files", "files": _describe(paths)}


def _read(paths: dict[str, Path]) -> dict[str, Table]:
    return {split: read_table(path) for split, path in paths.items()}


def _describe(paths: dict[str, Path]) -> list[dict[str, Any]]:
    # By name, size and content, never by absolute path: a moved folder is the same data.
    return [
        {"split": s, "file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)}
        for s, p in paths.items()
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- hub


def _from_hub(spec: str, label_column: str) -> tuple[str, dict[str, Table], dict[str, Any]]:
    """A Hugging Face dataset's train / validation (or dev) / test splits as tables."""
    dataset, _, config = spec.partition(":")
    if not dataset:
        raise SraError("task:hf: needs a dataset: task:hf:NAME[:CONFIG]")
    try:
        import datasets  # heavy import (seconds): only this source needs it

        loaded = datasets.load_dataset(dataset, config or None)
    except Exception as e:  # offline, not found, bad config: one fix for users
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise SraError(
            f"cannot load dataset {dataset}{f' config {config}' if config else ''} ({reason}); "
            "check the name and config, connect to the internet, or save the data as a task "
            "folder and use task:PATH"
        ) from e
    splits: dict[str, Any] = {}
    for hub_split in loaded:
        ours = SPLIT_NAMES.get(str(hub_split).lower())
        if ours is not None and ours in splits:
            raise SraError(f"dataset {dataset} has two {ours} splits; keep one")
        if ours is not None:
            splits[ours] = (hub_split, loaded[hub_split])
    if "train" not in splits:
        raise SraError(
            f"dataset {dataset} has no train split (it has: {', '.join(map(str, loaded))})"
        )
    tables = {}
    content = hashlib.sha256()
    for ours, (hub_split, rows) in splits.items():
        columns = rows.to_dict()
        content.update(json.dumps([ours, columns], sort_keys=True, default=str).encode())
        label_feature = rows.features.get(label_column)
        tables[ours] = Table(
            f"hf:{dataset} split {hub_split}", columns, label_names=_class_names(label_feature)
        )
    name = Path(dataset.rstrip("/")).name + (f"-{config}" if config else "")
    source = {
        "source": "hub",
        "dataset": dataset,
        "config": config or None,
        "splits": {ours: str(hub_split) for ours, (hub_split, _) in splits.items()},
        "content_sha256": content.hexdigest(),
    }
    return name, tables, source


def _class_names(feature: Any) -> tuple[str, ...] | None:
    """A ClassLabel's names, or those of a list of ClassLabels (multi-label); else None."""
    names = getattr(feature, "names", None)
    if names is None:
        names = getattr(getattr(feature, "feature", None), "names", None)
    return tuple(str(n) for n in names) if names else None
