"""Own task files as tables: CSV, TSV, JSONL or Parquet, each optionally gzip'd.

The format comes from the file name (``train.csv``, ``dev.jsonl.gz``, ...); every reader
returns a ``Table``: column names, one list of values per column (None where a row has no
value), and where each row is, for error messages (``file:line``, or ``file row N``).

* **CSV**: the ``csv`` module's standard dialect (comma-separated, ``"``-quoted fields with
  ``""`` for a quote, line breaks allowed inside quotes), a header row first.
* **TSV**: one line per row, fields split on tabs, **no quoting**: a ``"`` is an ordinary
  character. This is how GLUE, SICK and most TSV datasets are written (many of their texts
  open a quote they never close, which a quoting reader would run across lines). A field can
  therefore hold no tab or line break; a file that quotes its fields should be CSV.
* **JSONL**: one JSON object per line; a value may be a list (multi-label labels).
* **Parquet**: read with pyarrow; list columns stay lists.

Text files must be UTF-8 (a byte-order mark is dropped); blank lines are skipped.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.errors import SraError

FORMATS = ("csv", "tsv", "jsonl", "parquet")


@dataclass
class Table:
    """One split's rows, by column."""

    name: str  # the file (or "hf:NAME split S"), for messages
    columns: dict[str, list[Any]]  # column -> one value per row (None: the row has none)
    lines: list[int] | None = None  # each row's (first) line in a text file
    # A hub dataset's label names when its label column is a ClassLabel (or a list of them):
    # the values are then indices into these, in the dataset's own order.
    label_names: tuple[str, ...] | None = None

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def where(self, row: int) -> str:
        if self.lines is not None:
            return f"{self.name}:{self.lines[row]}"
        return f"{self.name} row {row + 1}"


def file_format(path: Path) -> str | None:
    """``csv``, ``tsv``, ``jsonl`` or ``parquet`` from the name (a ``.gz`` after it is fine)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1].lstrip(".") if suffixes else ""
    return ext if ext in FORMATS else None


def read_table(path: Path) -> Table:
    """The file as a Table; a file it cannot read raises a one-line SraError naming it."""
    fmt = file_format(path)
    if fmt is None:
        raise SraError(
            f"{path}: unknown format; name task files .csv, .tsv, .jsonl or .parquet (each "
            "optionally .gz)"
        )
    data = _read_bytes(path)
    if fmt == "parquet":
        table = _parquet(path, data)
    else:
        text = _decode(path, data)
        table = {"csv": _csv, "tsv": _tsv, "jsonl": _jsonl}[fmt](path, text)
    if table.num_rows == 0:
        raise SraError(f"{path} holds no rows; a task split needs at least one example")
    return table


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SraError(f"cannot read {path}: {e.strerror or e}") from None
    if path.suffix.lower() != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise SraError(f"{path} is not a complete gzip file ({e})") from None


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SraError(
            f"{path}:{line}: bytes that are not UTF-8; re-save the file as UTF-8"
        ) from None


def _header(path: Path, names: list[str], line: int) -> list[str]:
    header = [name.strip() for name in names]
    duplicates = sorted({n for n in header if header.count(n) > 1})
    if duplicates or "" in header:
        what = f"column {duplicates[0]!r} twice" if duplicates else "a column without a name"
        raise SraError(f"{path}:{line}: the header has {what}; give every column its own name")
    return header


def _from_rows(
    path: Path, header: list[str], rows: list[list[str]], lines: list[int], sep: str
) -> Table:
    for fields, line in zip(rows, lines, strict=True):
        if len(fields) != len(header):
            extra = " (a text must not contain a tab: use CSV with quoting)" if sep == "tab" else ""
            raise SraError(
                f"{path}:{line}: row has {len(fields)} {sep}-separated fields, the header has "
                f"{len(header)} ({', '.join(header)}){extra}"
            )
    columns = {name: [fields[i] for fields in rows] for i, name in enumerate(header)}
    return Table(str(path), columns, lines)


def _csv(path: Path, text: str) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    try:
        start = 1
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                if header is None:
                    header = _header(path, fields, start)
                else:
                    rows.append(fields)
                    lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise SraError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    if header is None:
        raise SraError(f"{path} is empty; a task file needs a header row and examples")
    return _from_rows(path, header, rows, lines, "comma")


def _tsv(path: Path, text: str) -> Table:
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if header is None:
            header = _header(path, line.split("\t"), number)
        else:
            rows.append(line.split("\t"))
            lines.append(number)
    if header is None:
        raise SraError(f"{path} is empty; a task file needs a header row and examples")
    return _from_rows(path, header, rows, lines, "tab")


def _jsonl(path: Path, text: str) -> Table:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SraError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise SraError(
                f"{path}:{number}: a JSONL row must be an object of columns, got "
                f"{type(record).__name__}"
            )
        records.append(record)
        lines.append(number)
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns = {name: [record.get(name) for record in records] for name in names}
    return Table(str(path), columns, lines)


def _parquet(path: Path, data: bytes) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        raise SraError(f"{path} is not a Parquet file ({e})") from None
    columns = {name: _no_nan(table.column(name).to_pylist()) for name in table.column_names}
    return Table(str(path), columns)


def _no_nan(values: list[Any]) -> list[Any]:
    # pandas writes a missing number as NaN: it means no value, as None does.
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]
