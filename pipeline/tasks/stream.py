"""Rows streamed from and to files, a chunk at a time: what `pipeline predict` reads and writes.

Reading (``RowReader``): CSV, TSV, JSONL and TXT, each optionally gzip'd, and Parquet. Each row
becomes a ``dict`` of its columns in file order, so any input format can be written as any
output format. The formats are read as task files are (``tables.py``): CSV in the standard
dialect (quoted fields may hold commas and line breaks), TSV split on tabs with no quoting,
JSONL one object per line, Parquet by record batch; TXT is one text per line, in a column
named as the text column. Blank lines are skipped in CSV, TSV and JSONL (as in task files);
in TXT a blank line is a row with an empty text, so that output row N is input line N.

Writing (``RowWriter``): CSV, TSV or JSONL (optionally ``.gz``), into a file the caller names
(`predict` writes a temporary file and renames it into place at the end). CSV and TSV take
their header from the first row; a JSONL input whose later rows have other keys cannot be
written as one table and is refused on the row that differs.

Memory stays flat: a reader holds one chunk of rows, a writer none.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cache.errors import SraError

INPUT_FORMATS = ("csv", "tsv", "jsonl", "txt", "parquet")
OUTPUT_FORMATS = ("csv", "tsv", "jsonl")

Row = dict[str, Any]


def file_format(path: Path, formats: tuple[str, ...], what: str) -> str:
    """The format named by ``path``'s extension (``.gz`` after it allowed, not for Parquet)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    ext = (suffixes[-2] if gz and len(suffixes) > 1 else suffixes[-1] if suffixes else "")[1:]
    if ext not in formats or (gz and ext == "parquet"):
        names = ", ".join(f".{f}" for f in formats)
        raise SraError(f"{what} {path}: unknown format; name it {names} (text formats may end .gz)")
    return ext


def is_gzip(path: Path) -> bool:
    return Path(path).suffix.lower() == ".gz"


# ---------------------------------------------------------------------------- reading


class RowReader:
    """The rows of one file, in order, a chunk at a time (``chunks``). ``columns`` is the
    header (CSV, TSV, Parquet), the first object's keys (JSONL) or the one text column (TXT);
    ``position`` / ``size`` say how far it has read, for progress."""

    def __init__(self, path: Path, text_column: str) -> None:
        self.path = Path(path)
        self.format = file_format(self.path, INPUT_FORMATS, "--input")
        if not self.path.is_file():
            raise SraError(f"--input {self.path}: no such file")
        self.size = self.path.stat().st_size
        self._text_column = text_column  # TXT: the name its one column takes
        self._raw: IO[bytes] | None = None
        self._rows: Iterator[tuple[int, Row]] | None = None
        self._first: tuple[int, Row] | None = None
        self.columns: list[str] = []
        self.rows_read = 0
        self._open()

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> None:
        self._raw = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        if self.format == "parquet":
            self._rows = self._parquet()
        else:
            stream: IO[bytes] = (
                gzip.GzipFile(fileobj=self._raw) if is_gzip(self.path) else self._raw
            )
            # CSV needs newline="" (quoted fields may hold line breaks); the others are lines
            # ending in "\n" (a "\r" before it is dropped), as task files are read.
            newline = "" if self.format == "csv" else "\n"
            text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline=newline)
            self._rows = {
                "csv": self._csv,
                "tsv": self._tsv,
                "jsonl": self._jsonl,
                "txt": self._txt,
            }[self.format](text)
        try:
            self._first = next(self._rows, None)
        except UnicodeDecodeError:
            raise self._not_utf8() from None
        if self.format == "jsonl" and self._first is not None:
            self.columns = list(self._first[1])

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def position(self) -> int:
        """Bytes of the file read so far (of ``size``)."""
        if self._raw is None or self._raw.closed:
            return self.size
        return min(self._raw.tell(), self.size)

    def where(self, line: int) -> str:
        if self.format == "parquet":
            return f"{self.path} row {line}"
        return f"{self.path}:{line}"

    # -- rows ------------------------------------------------------------------------------

    def chunks(self, size: int) -> Iterator[list[tuple[int, Row]]]:
        """Lists of up to ``size`` (line, row) pairs, in file order."""
        assert self._rows is not None
        chunk: list[tuple[int, Row]] = []
        if self._first is not None:
            chunk.append(self._first)
            self._first = None
        try:
            for item in self._rows:
                chunk.append(item)
                if len(chunk) >= size:
                    self.rows_read += len(chunk)
                    yield chunk
                    chunk = []
        except UnicodeDecodeError:
            raise self._not_utf8() from None
        except (OSError, EOFError) as e:  # a truncated gzip, a disk error
            raise SraError(f"cannot read {self.path}: {e}") from None
        if chunk:
            self.rows_read += len(chunk)
            yield chunk

    def _not_utf8(self) -> SraError:
        return SraError(
            f"{self.path}: bytes that are not UTF-8 (after about {self.rows_read:,} rows); "
            "re-save the file as UTF-8"
        )

    def _header(self, names: list[str], line: int) -> list[str]:
        header = [name.strip() for name in names]
        duplicates = sorted({n for n in header if header.count(n) > 1})
        if duplicates or "" in header:
            what = f"column {duplicates[0]!r} twice" if duplicates else "a column without a name"
            raise SraError(f"{self.path}:{line}: the header has {what}; name every column once")
        self.columns = header
        return header

    def _check_width(self, fields: list[str], header: list[str], line: int, sep: str) -> None:
        if len(fields) != len(header):
            extra = " (a text must not contain a tab: use CSV with quoting)" if sep == "tab" else ""
            raise SraError(
                f"{self.path}:{line}: row has {len(fields)} {sep}-separated fields, the header "
                f"has {len(header)} ({', '.join(header)}){extra}"
            )

    def _csv(self, text: IO[str]) -> Iterator[tuple[int, Row]]:
        reader = csv.reader(text, strict=True)
        header: list[str] | None = None
        start = 1
        try:
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    if header is None:
                        header = self._header(fields, start)
                    else:
                        self._check_width(fields, header, start, "comma")
                        yield start, dict(zip(header, fields, strict=True))
                start = reader.line_num + 1
        except csv.Error as e:
            raise SraError(f"{self.path}:{reader.line_num}: not valid CSV ({e})") from None
        if header is None:
            raise SraError(f"{self.path} is empty; it needs a header row naming its columns")

    def _tsv(self, text: IO[str]) -> Iterator[tuple[int, Row]]:
        header: list[str] | None = None
        for number, line in enumerate(text, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if header is None:
                header = self._header(fields, number)
            else:
                self._check_width(fields, header, number, "tab")
                yield number, dict(zip(header, fields, strict=True))
        if header is None:
            raise SraError(f"{self.path} is empty; it needs a header row naming its columns")

    def _jsonl(self, text: IO[str]) -> Iterator[tuple[int, Row]]:
        for number, line in enumerate(text, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SraError(f"{self.path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise SraError(
                    f"{self.path}:{number}: a JSONL row must be an object of columns, got "
                    f"{type(record).__name__}"
                )
            yield number, record

    def _txt(self, text: IO[str]) -> Iterator[tuple[int, Row]]:
        self.columns = [self._text_column]
        for number, line in enumerate(text, 1):
            yield number, {self._text_column: line.rstrip("\r\n")}

    def _parquet(self) -> Iterator[tuple[int, Row]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self._raw)
        except (pa.ArrowException, OSError) as e:
            raise SraError(f"{self.path} is not a Parquet file ({e})") from None
        self.columns = list(parquet.schema_arrow.names)
        number = 0
        for batch in parquet.iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                number += 1
                yield number, record


# ---------------------------------------------------------------------------- writing


class RowWriter:
    """Rows (dicts) to CSV, TSV or JSONL; the header of CSV/TSV is the first row's keys."""

    def __init__(self, path: Path, fmt: str, gz: bool) -> None:
        self.path = Path(path)
        self.format = fmt
        self._raw = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._stream: IO[bytes] = (
            gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0) if gz else self._raw
        )
        self._text = io.TextIOWrapper(self._stream, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text, lineterminator="\n") if fmt == "csv" else None
        self.header: list[str] | None = None
        self.rows = 0

    def write(self, rows: list[Row], where: list[str]) -> None:
        """Append rows; ``where`` names each row's input line, for the one error a row can
        cause (a JSONL row with other keys, a TSV value holding a tab)."""
        if self.format == "jsonl":
            self._text.write(
                "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
            )
            self.rows += len(rows)
            return
        if self.header is None and rows:
            self.header = list(rows[0])
            self._table_row(self.header, where[0])
        for row, at in zip(rows, where, strict=True):
            if len(row) != len(self.header or ()) or list(row) != self.header:
                raise SraError(
                    f"{at}: this row's columns ({', '.join(row)}) differ from the first row's; "
                    f"{self.format.upper()} output needs one set of columns: write .jsonl instead"
                )
            self._table_row([_cell(v) for v in row.values()], at)
        self.rows += len(rows)

    def _table_row(self, cells: list[str], at: str) -> None:
        if self._csv is not None:
            self._csv.writerow(cells)
            return
        for cell in cells:
            if "\t" in cell or "\n" in cell or "\r" in cell:
                raise SraError(
                    f"{at}: a value holds a tab or line break, which TSV cannot hold; write "
                    ".csv or .jsonl instead"
                )
        self._text.write("\t".join(cells) + "\n")

    def close(self) -> None:
        """Flush everything to disk (gzip trailer included) and close."""
        import os

        self._text.flush()
        self._text.detach()  # the wrapper must not close the streams below on its own
        if self._stream is not self._raw:
            self._stream.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()

    def abort(self) -> None:
        """Close without caring about what is in the file (it is about to be deleted)."""
        for close in (self._text.detach, self._stream.close, self._raw.close):
            with contextlib.suppress(Exception):  # the file is deleted next
                close()


def _cell(value: Any) -> str:
    """A JSON value as one CSV/TSV cell: strings as they are, numbers in their shortest form,
    None empty, lists and objects as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str)
