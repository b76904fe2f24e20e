"""GLUE task data for stage one: read a split from the original TSV files or from the hub.

GLUE is one task source among others: ``load_glue`` reads every split of a preset
(``cache.tasks.TASKS``) into the same ``TaskExamples`` an own task's files give (``own.py``).

The original GLUE files are TSV with no quoting at all (a `"` is a literal character, and
many MRPC, RTE and STS-B sentences open a quote they never close), so lines are split on
tabs by hand; `csv` would swallow rows across line breaks. Each task has its own layout:
CoLA train/dev have no header, MRPC's header starts with a UTF-8 BOM, MNLI rows carry a
variable number of annotator labels before the gold label, and labels are written as 0/1
for some tasks and as names for others. `_LAYOUTS` records all of it in one place.

Texts are kept exactly as written (SST-2's trailing spaces included), because stage one
embeds them as they are and the hub holds the same strings.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.errors import SraError
from cache.tasks import (
    HUB_DATASET,
    STSB_MAX,
    STSB_MIN,
    TaskSpec,
    dev_splits,
    get_task,
    unlabeled_splits,
)
from pipeline.tasks.examples import Example, TaskExamples, task_sentences

__all__ = ["Example", "describe_task_source", "load_glue", "read_split", "task_sentences"]

_GLUE_DIR_HINT = "--glue-dir must point at the folder holding SST-2/, MRPC/, CoLA/, ..."
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}
_HASH_CHUNK = 1 << 20


# ---------------------------------------------------------------------------- file layouts


@dataclass(frozen=True)
class _Layout:
    """Where one split's fields sit in a GLUE TSV file, by header name."""

    text_a: str
    text_b: str | None
    label: str | None  # None: the split is unlabelled
    idx: str | None  # None: the file has no id column, number the rows
    columns: tuple[str, ...] | None = None  # names for a header-less file
    label_last: bool = False  # MNLI: the gold label is the last field, wherever that falls


# Labels are written as class indices for these tasks and as class names for the others.
_NUMERIC_LABELS = frozenset({"sst2", "cola", "mrpc", "qqp", "wnli"})
_COLA_COLUMNS = ("source", "label", "original_label", "sentence")

# task -> (labelled train/dev layout, unlabelled test layout)
_LAYOUTS: dict[str, tuple[_Layout, _Layout]] = {
    "sst2": (_Layout("sentence", None, "label", None), _Layout("sentence", None, None, "index")),
    "cola": (
        _Layout("sentence", None, "label", None, columns=_COLA_COLUMNS),
        _Layout("sentence", None, None, "index"),
    ),
    "mrpc": (
        _Layout("#1 String", "#2 String", "Quality", None),
        _Layout("#1 String", "#2 String", None, "index"),
    ),
    "stsb": (
        _Layout("sentence1", "sentence2", "score", "index"),
        _Layout("sentence1", "sentence2", None, "index"),
    ),
    "qqp": (
        _Layout("question1", "question2", "is_duplicate", "id"),
        _Layout("question1", "question2", None, "id"),
    ),
    "mnli": (
        _Layout("sentence1", "sentence2", "gold_label", "index", label_last=True),
        _Layout("sentence1", "sentence2", None, "index"),
    ),
    "qnli": (
        _Layout("question", "sentence", "label", "index"),
        _Layout("question", "sentence", None, "index"),
    ),
    "rte": (
        _Layout("sentence1", "sentence2", "label", "index"),
        _Layout("sentence1", "sentence2", None, "index"),
    ),
    "wnli": (
        _Layout("sentence1", "sentence2", "label", "index"),
        _Layout("sentence1", "sentence2", None, "index"),
    ),
}

# Text columns of each hub config (the hub renames MNLI's to premise/hypothesis).
_HUB_TEXT_COLUMNS: dict[str, tuple[str, str | None]] = {
    "sst2": ("sentence", None),
    "cola": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}


# ---------------------------------------------------------------------------- public API


def read_split(task: TaskSpec, split: str, glue_dir: Path | None) -> list[Example]:
    """All examples of one split, in file order.

    With `glue_dir`, read `glue_dir/<task.folder>/<split file>` (original GLUE TSV);
    without it, load the split of `nyu-mll/glue` with `datasets`. Bad input raises a
    one-line SraError naming the file and line.
    """
    _check_split(task, split)
    if glue_dir is None:
        return _read_hub(task, split)
    return _read_tsv(task, split, _split_path(task, split, Path(glue_dir)))


def load_glue(name: str, glue_dir: str | Path | None) -> TaskExamples:
    """Every split of GLUE task ``name`` that exists (train and dev must), read and checked:
    from ``glue_dir`` (original TSVs), else the hub."""
    try:
        task = get_task(name)
    except ValueError as e:
        raise SraError(str(e)) from None
    path = Path(glue_dir) if glue_dir else None
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
            raise SraError(f"{task.name} split {split!r} has no examples")
        if any(e.label is None for e in examples[split]):
            raise SraError(f"{task.name} split {split!r} has examples without a label")
    return TaskExamples(task, examples, describe_task_source(task, path, list(examples)))


def describe_task_source(
    task: TaskSpec, glue_dir: Path | None, splits: Sequence[str] | None = None
) -> dict[str, Any]:
    """JSON-able identity of a task's data, for a cache fingerprint.

    Local files are identified by name, size and sha256, never by absolute path, so moving
    or copying the GLUE folder keeps the fingerprint while editing a file changes it.
    `splits` defaults to every split whose file exists (all of them for the hub).
    """
    for split in splits or ():
        _check_split(task, split)
    if glue_dir is None:
        chosen = list(splits or task.hub_splits)
        return {
            "task": task.name,
            "source": "hub",
            "dataset": HUB_DATASET,
            "config": task.hub_config,
            "splits": {split: task.hub_splits[split] for split in chosen},
        }
    glue_dir = Path(glue_dir)
    if splits is None:
        splits = [s for s in task.splits if (glue_dir / task.folder / task.splits[s]).is_file()]
        # Nothing there at all: let the first split's lookup explain what is missing.
        splits = splits or [next(iter(task.splits))]
    files = [_describe_file(split, _split_path(task, split, glue_dir)) for split in splits]
    return {"task": task.name, "source": "local", "folder": task.folder, "files": files}


# ---------------------------------------------------------------------------- local files


def _check_split(task: TaskSpec, split: str) -> None:
    if split not in task.splits:
        raise SraError(
            f"GLUE task {task.name} has no split {split!r}; use one of {', '.join(task.splits)}"
        )


def _split_path(task: TaskSpec, split: str, glue_dir: Path) -> Path:
    """The split's TSV file, or a SraError saying which part of the path is wrong."""
    folder = glue_dir / task.folder
    path = folder / task.splits[split]
    if path.is_file():
        return path
    if not glue_dir.is_dir():
        raise SraError(f"GLUE folder {glue_dir} does not exist; {_GLUE_DIR_HINT}")
    if not folder.is_dir():
        hint = ""
        if glue_dir.name.lower() == task.folder.lower() or (glue_dir / path.name).is_file():
            hint = f" ({glue_dir} looks like the {task.folder} folder itself: pass its parent)"
        raise SraError(
            f"GLUE folder {glue_dir} has no {task.folder}/ subfolder for task {task.name}"
            f"{hint}; {_GLUE_DIR_HINT}"
        )
    raise SraError(
        f"{path} not found: task {task.name} split {split!r} needs {task.folder}/{path.name}; "
        f"{_GLUE_DIR_HINT} with the original GLUE files, or drop --glue-dir to use the hub"
    )


def _describe_file(split: str, path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    return {"split": split, "file": path.name, "bytes": size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _layout(task: TaskSpec, split: str) -> _Layout:
    labelled, unlabelled = _LAYOUTS[task.name]
    return unlabelled if split in unlabeled_splits(task) else labelled


def _read_tsv(task: TaskSpec, split: str, path: Path) -> list[Example]:
    layout = _layout(task, split)
    lines = _iter_fields(path)
    if layout.columns is not None:
        header = layout.columns
    else:
        first = next(lines, None)
        if first is None:
            raise _empty(path)
        header = tuple(first[1])
    positions = _column_positions(header, layout, path)
    # Rows must match the header exactly: with no quoting, a stray tab inside a text would
    # otherwise shift every later column silently. MNLI rows vary by design (annotator
    # labels), so there only the texts (and one label after them) are required.
    if layout.label_last:
        before_label = [pos for key, pos in positions.items() if key != "label"]
        need = max(before_label) + 1 + (layout.label is not None)
        exact = None
    else:
        need, exact = len(header), len(header)
    examples = []
    for lineno, fields in lines:
        where = f"{path}:{lineno}"
        if len(fields) < need or (exact is not None and len(fields) > exact):
            raise SraError(
                f"{where}: row has {len(fields)} tab-separated fields, expected "
                f"{exact if exact is not None else f'at least {need}'} ({', '.join(header)}); "
                "fix that row (a text must not contain a tab) or use the original GLUE file"
            )
        examples.append(_example(task, layout, positions, fields, len(examples), where))
    if not examples:
        raise _empty(path, header_only=layout.columns is None)
    return examples


def _iter_fields(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, tab-separated fields) of each non-blank line, read strictly.

    Read in binary and decoded line by line so a bad byte is reported with its line, and
    MNLI's 400k-row train file never has to sit in memory as one string.
    """
    with open(path, "rb") as stream:
        for lineno, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SraError(
                    f"{path}:{lineno}: bytes that are not UTF-8 (at byte {exc.start + 1} of the "
                    "line); re-save the file as UTF-8 or use the original GLUE file"
                ) from None
            line = line.rstrip("\n").rstrip("\r")
            if line:
                yield lineno, line.split("\t")


def _empty(path: Path, header_only: bool = False) -> SraError:
    what = "has a header but no rows" if header_only else "is empty"
    return SraError(f"{path} {what}; replace it with the complete original GLUE file")


def _column_positions(header: Sequence[str], layout: _Layout, path: Path) -> dict[str, int]:
    wanted = {
        "text_a": layout.text_a,
        "text_b": layout.text_b,
        "label": layout.label,
        "idx": layout.idx,
    }
    names = [name.strip() for name in header]
    missing = [col for col in wanted.values() if col is not None and col not in names]
    if missing:
        raise SraError(
            f"{path}:1: header lacks column(s) {', '.join(map(repr, missing))} (it has: "
            f"{', '.join(map(repr, names))}); use the original GLUE file for this task and split"
        )
    return {key: names.index(col) for key, col in wanted.items() if col is not None}


def _example(
    task: TaskSpec,
    layout: _Layout,
    positions: dict[str, int],
    fields: list[str],
    row: int,
    where: str,
) -> Example:
    label: float | int | None = None
    if layout.label is not None:
        raw = fields[-1] if layout.label_last else fields[positions["label"]]
        label = _parse_label(task, raw, where)
    idx = row
    if "idx" in positions:
        idx = _parse_int(fields[positions["idx"]], where, f"{layout.idx!r} column")
    text_b = fields[positions["text_b"]] if "text_b" in positions else None
    return Example(idx=idx, text_a=fields[positions["text_a"]], text_b=text_b, label=label)


def _parse_label(task: TaskSpec, raw: str, where: str) -> float | int:
    value = raw.strip()
    if task.labels is None:
        return _parse_score(value, where)
    # Some tasks write the class index, others the class name; accept only the file's own.
    numeric = task.name in _NUMERIC_LABELS
    allowed = [str(i) for i in range(len(task.labels))] if numeric else list(task.labels)
    if value in allowed:
        return allowed.index(value)
    raise SraError(
        f"{where}: label {value!r} is not one of {', '.join(allowed)} for task {task.name}; "
        "fix that row or use the original GLUE file"
    )


def _parse_score(value: str, where: str) -> float:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not STSB_MIN <= score <= STSB_MAX:  # also rejects nan
        raise SraError(
            f"{where}: STS-B score {value!r} is not a number in [{STSB_MIN:g}, {STSB_MAX:g}]; "
            "fix that row or use the original GLUE file"
        )
    return score


def _parse_int(value: str, where: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise SraError(
            f"{where}: {what} holds {value!r}, not an integer; fix that row or use the original "
            "GLUE file"
        ) from None


# ---------------------------------------------------------------------------- hub


def _read_hub(task: TaskSpec, split: str) -> list[Example]:
    hub_split = task.hub_splits[split]
    try:
        import datasets  # heavy import (seconds): only the hub path needs it

        rows = datasets.load_dataset(HUB_DATASET, task.hub_config, split=hub_split)
    except Exception as exc:  # offline, network, auth, renamed split: all one fix for users
        reason = _one_line(exc)
        if _hub_offline():
            reason = f"HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set and it is not cached: {reason}"
        raise _hub_error(task, hub_split, reason) from exc
    text_a, text_b = _HUB_TEXT_COLUMNS[task.name]
    wanted = [c for c in (text_a, text_b, "label") if c is not None]
    missing = [c for c in wanted if c not in rows.column_names]
    if missing:
        raise _hub_error(
            task, hub_split, f"no column(s) {', '.join(missing)}; it has {rows.column_names}"
        )
    _check_hub_label_names(task, hub_split, rows.features.get("label"))
    has_idx = "idx" in rows.column_names
    data = rows.select_columns(wanted + ["idx"] * has_idx).to_dict()
    where = f"{HUB_DATASET} {task.hub_config} split {hub_split}"
    return [
        Example(
            idx=int(data["idx"][row]) if has_idx else row,
            text_a=data[text_a][row],
            text_b=data[text_b][row] if text_b is not None else None,
            label=_hub_label(task, data["label"][row], f"{where} row {row}"),
        )
        for row in range(len(data[text_a]))
    ]


def _check_hub_label_names(task: TaskSpec, hub_split: str, feature: Any) -> None:
    # Our label indices must mean what the hub's mean; a renamed or reordered ClassLabel
    # would silently flip every label, so refuse it.
    names = getattr(feature, "names", None)
    if task.labels is not None and names is not None and tuple(names) != task.labels:
        raise _hub_error(
            task, hub_split, f"its labels are {list(names)}, expected {list(task.labels)}"
        )


def _hub_label(task: TaskSpec, value: Any, where: str) -> float | int | None:
    # The hub marks withheld test labels with -1.
    if value is None or value == -1:
        return None
    if task.labels is None:
        score = float(value)
        if not STSB_MIN <= score <= STSB_MAX:
            raise SraError(f"{where}: STS-B score {value!r} is outside [0, 5]")
        return score
    if value not in range(len(task.labels)):
        raise SraError(f"{where}: label {value!r} is not a class index below {len(task.labels)}")
    return int(value)


def _hub_offline() -> bool:
    return any(os.environ.get(var, "").strip().upper() in _OFFLINE_VALUES for var in _OFFLINE_VARS)


def _hub_error(task: TaskSpec, hub_split: str, reason: str) -> SraError:
    return SraError(
        f"cannot load {HUB_DATASET} config {task.hub_config} split {hub_split} from the "
        f"Hugging Face Hub ({reason}); pass --glue-dir PATH to a folder holding the original "
        "GLUE files (SST-2/, MRPC/, ...), or connect to the internet"
    )


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
