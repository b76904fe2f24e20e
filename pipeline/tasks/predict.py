"""`pipeline predict`: a fine-tuned task model over a file of texts, streamed.

    pipeline predict --model runs/tickets --input new_tickets.csv --output predictions.csv

Read top to bottom, ``predict_file``: check the paths (an existing ``--output`` is refused
unless ``--overwrite``), load the model (``student.TaskModel``: no teacher, no
``transformers``), open the input (``stream.RowReader``) and check its columns against what
the model reads, then chunk by chunk: the texts, the model's outputs, the rows written with
the new columns. Output goes to a temporary file beside ``--output`` that is renamed into
place at the end, so a failure (bad row, full disk, Ctrl-C) leaves no half-written output and
an existing one untouched.

Columns added to every input row (the input's own columns come first, unchanged):

- classification: ``prediction`` (the label name) and ``p_LABEL`` per label (softmax);
- multi-label: ``prediction`` (the predicted labels joined by the task's label separator,
  ``|`` when it had none; a list in JSONL) and ``p_LABEL`` per label (one sigmoid each; a
  label is predicted above 0.5);
- regression: ``score`` (on the task's scale).

Memory is flat in the input's size: one chunk (``--chunk-rows``) of rows is held at a time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache.errors import SraError
from cache.files import fsync_dir
from cache.options import option

if TYPE_CHECKING:
    from cache.tasks import TaskSpec
    from pipeline.tasks.stream import RowReader
    from student.task_model import TaskModel

DEFAULT_TEXT, DEFAULT_PAIR = "text", "text_pair"
PLAIN_EVERY = 30.0  # seconds between plain progress lines (not on a terminal)


@dataclass(frozen=True)
class PredictConfig:
    """Everything `pipeline predict` takes; its fields are the command's options."""

    model: Path = option(MISSING, "Task model folder (pipeline finetune --out).")
    input: Path = option(
        MISSING, "Texts: .csv, .tsv, .jsonl or .txt (one text per line), optionally .gz; .parquet."
    )
    output: Path = option(
        MISSING, "Where to write the rows with their predictions: .csv, .tsv or .jsonl (.gz)."
    )
    text_column: str | None = option(
        None, "Input column of the text (default: the model's training column, else text)."
    )
    pair_column: str | None = option(
        None, "Pair models: column of the second text (default: the model's, else text_pair)."
    )
    batch_size: int = option(256, "Texts per forward pass.")
    chunk_rows: int = option(8192, "Rows read, predicted and written at a time (flat memory).")
    backend: str | None = option(
        None,
        "torch | onnx | onnx-int8 (ONNX Runtime); default: torch for a fine-tuned run, the "
        "export's own for a `pipeline export` folder.",
    )
    device: str = option("cpu", "cpu | cuda.")
    overwrite: bool = option(False, "Replace an existing --output.")
    progress: bool = option(True, "Show progress (a bar on a terminal, else a line every 30 s).")
    json_path: Path | None = option(
        None, "Also write what was done (rows, seconds, rows/s) as JSON here.", flag="json"
    )

    def __post_init__(self) -> None:
        for name in ("model", "input", "output"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        for name in ("batch_size", "chunk_rows"):
            if getattr(self, name) < 1:
                raise SraError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.device not in ("cpu", "cuda"):
            raise SraError(f"--device must be cpu or cuda, got {self.device!r}")


def predict_file(cfg: PredictConfig) -> dict[str, Any]:
    """Write ``cfg.output``: every row of ``cfg.input``, in order, with its prediction."""
    from pipeline.tasks.stream import OUTPUT_FORMATS, RowReader, RowWriter, file_format, is_gzip
    from student.task_model import TaskModel

    # -- paths, before anything is loaded ----------------------------------------------------
    out_format = file_format(cfg.output, OUTPUT_FORMATS, "--output")
    if not cfg.input.is_file():
        raise SraError(f"--input {cfg.input}: no such file")
    if cfg.output.exists() and cfg.output.resolve() == cfg.input.resolve():
        raise SraError(
            f"--output {cfg.output} is the --input file; write the predictions elsewhere"
        )
    if cfg.output.is_dir():
        raise SraError(f"--output {cfg.output} is a folder; name a file (.csv, .tsv or .jsonl)")
    if cfg.output.exists() and not cfg.overwrite:
        raise SraError(f"--output {cfg.output} already exists; pass --overwrite to replace it")

    # -- the model and the input's columns ---------------------------------------------------
    model = TaskModel.from_pretrained(cfg.model, backend=cfg.backend, device=cfg.device)
    text_column, pair_column = input_columns(cfg, model)
    reader = RowReader(cfg.input, text_column)
    with contextlib.closing(reader):
        check_columns(reader, model.task, text_column, pair_column)
        added = added_columns(model.task)
        clash = [c for c in added if c in reader.columns]
        if clash:
            raise SraError(
                f"{cfg.input} already has a column {clash[0]!r}, which the predictions would "
                "overwrite; rename it"
            )
        separator = (model.columns or {}).get("label_separator") or "|"

        # -- stream: read a chunk, predict it, write it --------------------------------------
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
        temp = cfg.output.parent / f".{cfg.output.name}.{uuid.uuid4().hex[:12]}.tmp"
        writer = RowWriter(temp, out_format, is_gzip(cfg.output))
        t0 = time.perf_counter()
        try:
            with Progress(reader, cfg.progress) as progress:
                for chunk in reader.chunks(cfg.chunk_rows):
                    rows = [row for _, row in chunk]
                    where = [reader.where(line) for line, _ in chunk]
                    first = texts(rows, text_column, where)
                    second = None if pair_column is None else texts(rows, pair_column, where)
                    outputs = model.outputs(first, second, cfg.batch_size)
                    annotate(rows, model.task, outputs, out_format == "jsonl", separator)
                    writer.write(rows, where)
                    progress.update()
            writer.close()
            os.replace(temp, cfg.output)
        except BaseException:
            writer.abort()
            temp.unlink(missing_ok=True)
            raise
        fsync_dir(cfg.output.parent)
    seconds = time.perf_counter() - t0
    result = {
        "model": str(cfg.model),
        "input": str(cfg.input),
        "output": str(cfg.output),
        "rows": writer.rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(writer.rows / seconds, 1) if seconds > 0 else None,
        "backend": model.backend,
    }
    if cfg.progress:
        print(
            f"wrote {cfg.output}: {writer.rows:,} rows in {seconds:.1f} s "
            f"({result['rows_per_s']:,} rows/s)",
            file=sys.stderr,
        )
    return result


# ---------------------------------------------------------------------------- the pieces


def input_columns(cfg: PredictConfig, model: TaskModel) -> tuple[str, str | None]:
    """The input's text (and pair) column: as given, else as the model was trained, else
    ``text`` / ``text_pair``."""
    trained = model.columns or {}
    text = cfg.text_column or trained.get("text") or DEFAULT_TEXT
    if not model.task.pair:
        if cfg.pair_column is not None:
            raise SraError(
                f"--pair-column: {model.task.name} reads single texts, not pairs; leave it out"
            )
        return text, None
    return text, cfg.pair_column or trained.get("pair") or DEFAULT_PAIR


def check_columns(reader: RowReader, task: TaskSpec, text: str, pair: str | None) -> None:
    """The input has the columns the model reads; else one line naming the ones it has."""
    if reader.format == "txt":
        if pair is not None:
            raise SraError(
                f"{task.name} reads sentence pairs, and a .txt input holds one text per line: "
                f"give a .csv, .tsv or .jsonl with columns {text!r} and {pair!r}"
            )
        return
    if not reader.columns and reader.format != "jsonl":
        return
    have = ", ".join(reader.columns) or "none"
    for column, flag in ((text, "--text-column"), (pair, "--pair-column")):
        if column is not None and column not in reader.columns:
            what = "the second text of each pair" if flag == "--pair-column" else "the text"
            raise SraError(
                f"{reader.path} has no column {column!r} for {what} (it has: {have}); pass "
                f"{flag} to name the right one"
            )


def texts(rows: list[dict[str, Any]], column: str, where: list[str]) -> list[str]:
    """One column of a chunk, each value a string (an empty one is a text too)."""
    out = []
    for row, at in zip(rows, where, strict=True):
        value = row.get(column)
        if not isinstance(value, str):
            what = "no value" if value is None else f"a {type(value).__name__}, not a string"
            raise SraError(f"{at}: column {column!r} holds {what}; every row needs its text")
        out.append(value)
    return out


def added_columns(task: TaskSpec) -> list[str]:
    """The columns predictions add: ``score``, or ``prediction`` and ``p_LABEL`` per label."""
    if task.labels is None:
        return ["score"]
    return ["prediction"] + [f"p_{label}" for label in task.labels]


def annotate(
    rows: list[dict[str, Any]], task: TaskSpec, outputs: Any, json: bool, separator: str
) -> None:
    """Add each row's prediction columns (``added_columns``) in place."""
    from student.task_model import label_names, read_predictions, read_probabilities

    predictions = label_names(task, read_predictions(task, outputs))
    if task.labels is None:
        for row, score in zip(rows, predictions, strict=True):
            row["score"] = _number(score, json)
        return
    names = [f"p_{label}" for label in task.labels]
    probabilities = read_probabilities(task, outputs).tolist()
    for row, prediction, ps in zip(rows, predictions, probabilities, strict=True):
        if task.is_multilabel:
            row["prediction"] = list(prediction) if json else separator.join(prediction)
        else:
            row["prediction"] = prediction
        for name, p in zip(names, ps, strict=True):
            row[name] = _number(p, json)


def _number(value: float, json: bool) -> float | str:
    """Six significant digits: a number in JSON, its text in CSV/TSV."""
    text = f"{value:.6g}"
    return float(text) if json else text


class Progress:
    """Rows done and share of the input read: a rich bar on a terminal, else a plain line
    every PLAIN_EVERY seconds (a log file shows the run is alive and how fast it goes)."""

    def __init__(self, reader: RowReader, enabled: bool) -> None:
        self.reader = reader
        self.enabled = enabled
        self.t0 = self.last = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        from rich.console import Console

        console = Console(stderr=True)
        if self.enabled and console.is_terminal:
            from rich.progress import (
                BarColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as Bar,
            )

            self._bar = Bar(
                TextColumn("[bold]predict"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rows]} rows"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("predict", total=max(self.reader.size, 1), rows="0")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self) -> None:
        if not self.enabled:
            return
        rows = self.reader.rows_read
        if self._bar is not None:
            self._bar.update(self._task, completed=self.reader.position, rows=f"{rows:,}")
            return
        now = time.perf_counter()
        if now - self.last >= PLAIN_EVERY:
            self.last = now
            share = self.reader.position / max(self.reader.size, 1)
            rate = rows / max(now - self.t0, 1e-9)
            print(
                f"predict: {rows:,} rows, {share:.0%} of {self.reader.path.name}, "
                f"{rate:,.0f} rows/s",
                file=sys.stderr,
                flush=True,
            )
