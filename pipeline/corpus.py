"""Corpus sources: turn a corpus spec into a deterministic stream of paragraphs.

Stage one caches sentences by their position in this stream, and a resumed run replays it,
so every source must yield the same paragraphs in the same order on every run: directories
are walked in sorted order, and nothing depends on mtimes, hashing seeds or thread timing.

Files are read in binary, line by line, so a corpus never has to fit in memory, a bad byte
costs one replaced character instead of the run, and a pathological line (a megabyte of
minified text) is cut at a fixed size instead of being read whole.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from cache.errors import SraError

WIKI_DUMP_ENV = "PIPELINE_WIKI_DUMP"
WIKI_HUB_NAME = "wikimedia/wikipedia"
WIKI_HUB_CONFIG = "20231101.en"
WIKI_HUB_SPLIT = "train"
DEFAULT_MAX_LINE_CHARS = 20_000

# Suffix -> kind. Longest suffixes first so "a.jsonl.gz" is not mistaken for something else.
_SUFFIX_KINDS: tuple[tuple[str, str], ...] = (
    (".jsonl.gz", "jsonl"),
    (".txt.gz", "text"),
    (".parquet", "parquet"),
    (".jsonl", "jsonl"),
    (".txt", "text"),
)
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(suffix for suffix, _ in _SUFFIX_KINDS)

_GZIP_MAGIC = b"\x1f\x8b"
_SKIP_CHUNK = 1 << 20
_PARQUET_BATCH_ROWS = 1024
_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_DOC_ID = re.compile(r'\bid="([^"]*)"')
# The title is the last attribute and WikiExtractor does not escape quotes inside it,
# so take everything up to the closing '">' of the line.
_DOC_TITLE = re.compile(r'\btitle="(.*)">\s*$')


@dataclass
class CorpusSpec:
    """Where the text comes from; see `iter_paragraphs` for the accepted forms."""

    corpus: str  # "wiki" | a local path (file or directory) | "hf:NAME[:CONFIG]"
    wiki_dump: str | None = None  # WikiExtractor dump; falls back to env PIPELINE_WIKI_DUMP
    split: str = "train"  # HF split
    text_field: str = "text"  # jsonl / parquet / HF text field


@dataclass
class Paragraph:
    """One non-blank, stripped line of text and where it came from."""

    text: str
    source: str  # "wiki:12:Anarchism", "corpus.txt:17" (1-based line), "hf:NAME:train:123"
    is_title: bool = False  # the title line of a wiki article (filters drop it)


@dataclass
class CorpusStats:
    """Counters for one pass over a corpus; they go into the cache manifest."""

    lines: int = 0  # input lines: of text files and dumps, JSONL lines, lines inside records
    empty_records: int = 0  # JSONL/parquet/dataset records whose text is null or blank
    non_utf8_lines: int = 0
    long_lines_truncated: int = 0
    paragraphs: int = 0
    sentences: int = 0
    dropped_headings: int = 0
    dropped_lists: int = 0
    dropped_short: int = 0
    dropped_long: int = 0
    duplicates: int = 0
    emitted: int = 0
    dedup_resets: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class _LocalFile:
    path: Path
    label: str  # the name used in sources: file name, or path relative to the corpus dir
    kind: str  # "text" | "jsonl" | "parquet"


@dataclass(frozen=True)
class _Resolved:
    """A validated corpus spec: everything needed to read it, nothing read yet."""

    kind: str  # "wiki-dump" | "wiki-hub" | "local" | "hf"
    path: Path | None = None
    files: tuple[_LocalFile, ...] = ()
    name: str = ""
    config: str | None = None
    split: str = ""


# ---------------------------------------------------------------------------- public API


def iter_paragraphs(
    spec: CorpusSpec, stats: CorpusStats, max_line_chars: int = DEFAULT_MAX_LINE_CHARS
) -> Iterator[Paragraph]:
    """Stream the corpus as paragraphs in a fixed order.

    `spec.corpus` is "wiki" (the WikiExtractor dump from `spec.wiki_dump` or
    $PIPELINE_WIKI_DUMP, else wikimedia/wikipedia 20231101.en streamed from the hub), a local
    .txt / .jsonl / .parquet file (.txt and .jsonl optionally .gz) or a directory of them, or
    "hf:NAME[:CONFIG]" for `datasets.load_dataset(..., streaming=True)`. Lines longer than
    `max_line_chars` are cut to it.

    The spec is validated now (missing paths, bad extensions, an offline wiki hub), so a
    bad spec fails at the call, before any consumer has started; hub datasets are
    contacted on the first `next()`.
    """
    if max_line_chars < 1:
        raise SraError(f"max_line_chars must be at least 1, got {max_line_chars}")
    resolved = _resolve(spec, for_reading=True)
    if resolved.kind == "wiki-dump":
        assert resolved.path is not None
        paragraphs = _read_wiki_dump(resolved.path, stats, max_line_chars)
        what = f"wiki dump {resolved.path}"
    elif resolved.kind == "wiki-hub":
        paragraphs = _read_wiki_hub(stats, max_line_chars)
        what = f"{WIKI_HUB_NAME} {WIKI_HUB_CONFIG}"
    elif resolved.kind == "hf":
        paragraphs = _read_hf(resolved, spec.text_field, stats, max_line_chars)
        what = f"Hugging Face dataset {resolved.name!r} split {resolved.split!r}"
    else:
        paragraphs = _read_local(resolved.files, spec.text_field, stats, max_line_chars)
        what = str(resolved.path)
    return _counted(paragraphs, stats, what)


def describe_corpus(spec: CorpusSpec) -> dict[str, Any]:
    """JSON-able identity of the corpus for the manifest and the config fingerprint.

    Sizes are included so a replaced file changes the fingerprint; mtimes are not, because
    a copy or a fresh checkout of the same bytes must keep its cache.
    """
    resolved = _resolve(spec, for_reading=False)
    if resolved.kind == "wiki-dump":
        assert resolved.path is not None
        return {"kind": "wiki-dump", "path": str(resolved.path), "bytes": _size(resolved.path)}
    if resolved.kind == "wiki-hub":
        return {
            "kind": "wiki-hub",
            "name": WIKI_HUB_NAME,
            "config": WIKI_HUB_CONFIG,
            "split": WIKI_HUB_SPLIT,
        }
    if resolved.kind == "hf":
        info: dict[str, Any] = {
            "kind": "hf",
            "name": resolved.name,
            "config": resolved.config,
            "split": resolved.split,
            "text_field": spec.text_field,
        }
        local = Path(resolved.name)
        if local.is_dir():
            info["path"] = str(local.resolve())
            info["files"] = [
                {"path": p.relative_to(local).as_posix(), "bytes": _size(p)} for p in _walk(local)
            ]
        return info
    kinds = sorted({f.kind for f in resolved.files})
    info = {
        "kind": kinds[0] if len(kinds) == 1 else "mixed",
        "path": str(resolved.path),
        "files": [
            {"path": f.label, "kind": f.kind, "bytes": _size(f.path)} for f in resolved.files
        ],
    }
    if any(f.kind != "text" for f in resolved.files):
        info["text_field"] = spec.text_field
    return info


def check_files(spec: CorpusSpec, records: int = 100) -> None:
    """Read the first `records` paragraphs of every local file of the corpus.

    A file of the wrong format (bad JSON, no such text field, not parquet) then fails before
    a teacher loads and before --out is touched, not an hour into the run. A bad record
    further into a file still fails only when the stream reaches it.
    """
    resolved = _resolve(spec, for_reading=True)
    for file in resolved.files:
        paragraphs = _read_local((file,), spec.text_field, CorpusStats(), DEFAULT_MAX_LINE_CHARS)
        for _ in itertools.islice(paragraphs, records):
            pass


def wiki_dump_path(spec: CorpusSpec) -> Path | None:
    """The WikiExtractor dump to read for `corpus="wiki"`, or None to stream the hub."""
    raw = spec.wiki_dump or os.environ.get(WIKI_DUMP_ENV) or None
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        origin = "--wiki-dump" if spec.wiki_dump else WIKI_DUMP_ENV
        raise SraError(
            f"wiki dump {path} (from {origin}) does not exist or is not a file; "
            "pass --wiki-dump PATH to a WikiExtractor dump (.txt or .gz)"
        )
    return path.resolve()


# ---------------------------------------------------------------------------- resolution


def _resolve(spec: CorpusSpec, *, for_reading: bool) -> _Resolved:
    corpus = spec.corpus.strip()
    if not corpus:
        raise SraError('corpus is empty; pass "wiki", a local path, or "hf:NAME[:CONFIG]"')
    if corpus == "wiki":
        dump = wiki_dump_path(spec)
        if dump is not None:
            return _Resolved(kind="wiki-dump", path=dump)
        if for_reading and _hub_offline():
            raise _wiki_hub_error("HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set")
        return _Resolved(kind="wiki-hub", name=WIKI_HUB_NAME, config=WIKI_HUB_CONFIG)
    if corpus.startswith("hf:"):
        name, _, config = corpus[3:].partition(":")
        if not name:
            raise SraError(f"corpus {corpus!r} names no dataset; write hf:NAME or hf:NAME:CONFIG")
        if not spec.split:
            raise SraError("split is empty; pass a dataset split such as train")
        return _Resolved(kind="hf", name=name, config=config or None, split=spec.split)
    return _resolve_local(Path(corpus).expanduser())


def _resolve_local(path: Path) -> _Resolved:
    if not path.exists():
        raise SraError(
            f"corpus path {path} does not exist; pass an existing file or directory, "
            '"wiki", or "hf:NAME"'
        )
    path = path.resolve()
    if path.is_file():
        kind = _kind_of(path)
        if kind is None and path.name.lower().endswith(".parquet.gz"):
            raise SraError(
                f"corpus file {path} is a gzipped parquet file; parquet compresses its own "
                "columns, so gunzip it and pass the .parquet file"
            )
        if kind is None:
            raise SraError(
                f"corpus file {path} has an unsupported extension; "
                f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
            )
        return _Resolved(kind="local", path=path, files=(_LocalFile(path, path.name, kind),))
    files = tuple(
        _LocalFile(p, p.relative_to(path).as_posix(), kind)
        for p in _walk(path)
        if (kind := _kind_of(p)) is not None
    )
    if not files:
        raise SraError(
            f"corpus directory {path} contains no supported files; "
            f"add files ending in {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return _Resolved(kind="local", path=path, files=files)


def _walk(root: Path) -> list[Path]:
    # Sorted by relative POSIX path so the order (and so every cache id) is the same on
    # every filesystem; hidden entries (.git, .cache) are never corpus text.
    found = [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, kind in _SUFFIX_KINDS:
        if name.endswith(suffix):
            return kind
    return None


def _size(path: Path) -> int:
    return path.stat().st_size


def _hub_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().upper() in _OFFLINE_VALUES
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _wiki_hub_error(reason: str) -> SraError:
    return SraError(
        f"cannot stream {WIKI_HUB_NAME} {WIKI_HUB_CONFIG} from the Hugging Face Hub ({reason}); "
        f"pass --wiki-dump PATH (or set {WIKI_DUMP_ENV}) to a local WikiExtractor dump, "
        "or connect to the internet"
    )


def _counted(paragraphs: Iterator[Paragraph], stats: CorpusStats, what: str) -> Iterator[Paragraph]:
    yielded = 0
    for paragraph in paragraphs:
        yielded += 1
        stats.paragraphs += 1
        yield paragraph
    if yielded == 0:
        raise SraError(f"{what} contains no text; point the corpus at a non-empty source")


# ---------------------------------------------------------------------------- line reading


def _open_binary(path: Path) -> IO[bytes]:
    # Sniff the magic instead of trusting the extension: a dump saved without ".gz"
    # should still read, and a ".gz" that is not gzip gets a clear error below.
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC or path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb", buffering=1 << 20)


def _iter_lines(path: Path, stats: CorpusStats, max_chars: int | None) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without its line break).

    With `max_chars`, at most ~4 bytes per allowed character are read per line and the
    rest of an overlong line is skipped in chunks, so memory stays bounded whatever the
    input; without it (jsonl records, which cannot be parsed in part) lines are read whole.
    """
    byte_cap = max_chars * 4 + 2 if max_chars else -1
    try:
        with _open_binary(path) as stream:
            lineno = 0
            while raw := stream.readline(byte_cap):
                lineno += 1
                cut = byte_cap > 0 and len(raw) == byte_cap and not raw.endswith(b"\n")
                if cut:
                    _skip_rest_of_line(stream)
                text = _decode(raw, stats, cut)
                if lineno == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                text = text.rstrip("\r\n")
                if max_chars and len(text) > max_chars:
                    text = text[:max_chars]
                    cut = True
                if cut:
                    stats.long_lines_truncated += 1
                stats.lines += 1
                yield lineno, text
    except (OSError, EOFError, zlib.error) as exc:
        raise SraError(
            f"cannot read {path}: {_one_line(exc)}; check the file is complete and not corrupted"
        ) from exc


def _skip_rest_of_line(stream: IO[bytes]) -> None:
    while chunk := stream.readline(_SKIP_CHUNK):
        if chunk.endswith(b"\n"):
            return


def _decode(raw: bytes, stats: CorpusStats, cut: bool) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data" and exc.start >= len(raw) - 3:
            # Our byte cap split a multi-byte character: that is not bad input.
            return raw[: exc.start].decode("utf-8", errors="replace")
        stats.non_utf8_lines += 1
        return raw.decode("utf-8", errors="replace")


def _clean_text(text: str, stats: CorpusStats) -> str:
    # JSON "\ud800" escapes decode to lone surrogates, which cannot be encoded as UTF-8
    # later (splitter, hashing); replace them like any other bad byte.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        stats.non_utf8_lines += 1
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _record_paragraphs(
    text: str | None,
    source: str,
    stats: CorpusStats,
    max_line_chars: int,
    count_lines: bool = True,
) -> Iterator[Paragraph]:
    """Paragraphs of one record (jsonl line, parquet row, dataset row): its text lines.

    `count_lines=False` where the record's own line was counted already (JSONL)."""
    found = False
    for line in (text or "").split("\n"):
        if count_lines:
            stats.lines += 1
        if len(line) > max_line_chars:
            line = line[:max_line_chars]
            stats.long_lines_truncated += 1
        line = line.strip()
        if line:
            found = True
            yield Paragraph(line, source)
    if not found:  # null or blank: dropped, and counted so the manifest says so
        stats.empty_records += 1


# ---------------------------------------------------------------------------- local files


def _read_local(
    files: tuple[_LocalFile, ...], text_field: str, stats: CorpusStats, max_line_chars: int
) -> Iterator[Paragraph]:
    for file in files:
        if file.kind == "text":
            yield from _read_text(file, stats, max_line_chars)
        elif file.kind == "jsonl":
            yield from _read_jsonl(file, text_field, stats, max_line_chars)
        else:
            yield from _read_parquet(file, text_field, stats, max_line_chars)


def _read_text(file: _LocalFile, stats: CorpusStats, max_line_chars: int) -> Iterator[Paragraph]:
    for lineno, line in _iter_lines(file.path, stats, max_line_chars):
        text = line.strip()
        if text:
            yield Paragraph(text, f"{file.label}:{lineno}")


def _read_jsonl(
    file: _LocalFile, text_field: str, stats: CorpusStats, max_line_chars: int
) -> Iterator[Paragraph]:
    for lineno, line in _iter_lines(file.path, stats, None):
        if not line.strip():
            continue
        where = f"{file.path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SraError(
                f"{where} is not valid JSON ({exc.msg}); fix or remove that line"
            ) from None
        if not isinstance(record, dict) or text_field not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise SraError(
                f"{where} has no field {text_field!r} (it has: {fields}); "
                "pass --text-field with the field that holds the text"
            )
        value = record[text_field]
        if value is not None and not isinstance(value, str):
            raise SraError(
                f"{where} field {text_field!r} is {type(value).__name__}, not text; "
                "pass --text-field with a string field"
            )
        text = None if value is None else _clean_text(value, stats)
        source = f"{file.label}:{lineno}"
        yield from _record_paragraphs(text, source, stats, max_line_chars, count_lines=False)


def _read_parquet(
    file: _LocalFile, text_field: str, stats: CorpusStats, max_line_chars: int
) -> Iterator[Paragraph]:
    import pyarrow as pa  # imported here: a txt or wiki run should not pay for pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file.path)
    except (pa.ArrowException, OSError) as exc:
        raise SraError(
            f"cannot read {file.path} as parquet: {_one_line(exc)}; check the file is a complete "
            "parquet file"
        ) from exc
    columns = parquet.schema_arrow.names
    if text_field not in columns:
        raise SraError(
            f"{file.path} has no column {text_field!r} (it has: {', '.join(columns)}); "
            "pass --text-field with the column that holds the text"
        )
    row = 0
    # Record batches keep memory at one batch, however large the file.
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[text_field]):
        for value in batch.column(0).to_pylist():
            row += 1
            if isinstance(value, bytes):
                value = _decode(value, stats, cut=False)
            elif value is not None and not isinstance(value, str):
                raise SraError(
                    f"{file.path} column {text_field!r} holds {type(value).__name__}, not text; "
                    "pass --text-field with a string column"
                )
            yield from _record_paragraphs(value, f"{file.label}:{row}", stats, max_line_chars)


# ---------------------------------------------------------------------------- wikipedia


def _read_wiki_dump(path: Path, stats: CorpusStats, max_line_chars: int) -> Iterator[Paragraph]:
    """Articles of a WikiExtractor dump: `<doc id=.. url=.. title=..>`, title line, text."""
    source: str | None = None
    title = ""
    expect_title = False
    articles = text_outside = 0
    for lineno, line in _iter_lines(path, stats, max_line_chars):
        if line.startswith("<doc "):
            articles += 1
            doc_id, title = _parse_doc_header(line, path, lineno)
            source = f"wiki:{doc_id}:{title}"
            expect_title = True
            continue
        if line.startswith("</doc>"):
            source = None
            continue
        text = line.strip()
        # Text outside <doc> blocks belongs to no article, so it has no source to cite.
        if source is None or not text:
            text_outside += bool(text)
            continue
        is_title = expect_title and text == title
        expect_title = False
        yield Paragraph(text, source, is_title)
    if not articles and text_outside:
        raise SraError(
            f"{path} has text but no <doc ...> articles; --corpus wiki reads a WikiExtractor "
            "dump (pass a plain text file as --corpus PATH instead)"
        )


def _parse_doc_header(line: str, path: Path, lineno: int) -> tuple[str, str]:
    doc_id = _DOC_ID.search(line)
    title = _DOC_TITLE.search(line)
    if doc_id is None or title is None:
        raise SraError(
            f'{path}:{lineno}: malformed article header (want <doc id=".." url=".." '
            'title="..">); is this a WikiExtractor dump?'
        )
    return doc_id.group(1), title.group(1)


def _read_wiki_hub(stats: CorpusStats, max_line_chars: int) -> Iterator[Paragraph]:
    rows = _stream_dataset(WIKI_HUB_NAME, WIKI_HUB_CONFIG, WIKI_HUB_SPLIT, _wiki_hub_error)
    for index, row in enumerate(rows):
        try:
            source = f"wiki:{row['id']}:{row['title']}"
            text = row["text"]
        except KeyError as exc:
            raise _wiki_hub_error(f"row {index} has no field {exc}") from None
        yield from _record_paragraphs(text or "", source, stats, max_line_chars)


# ---------------------------------------------------------------------------- HF datasets


def _read_hf(
    resolved: _Resolved, text_field: str, stats: CorpusStats, max_line_chars: int
) -> Iterator[Paragraph]:
    def fail(reason: str) -> SraError:
        config = f" config {resolved.config!r}" if resolved.config else ""
        return SraError(
            f"cannot load Hugging Face dataset {resolved.name!r}{config} split "
            f"{resolved.split!r} ({reason}); check the name, config and split, use a local "
            "dataset folder, or connect to the internet"
        )

    label = f"hf:{resolved.name}" + (f":{resolved.config}" if resolved.config else "")
    rows = _stream_dataset(resolved.name, resolved.config, resolved.split, fail)
    for index, row in enumerate(rows):
        if text_field not in row:
            raise SraError(
                f"dataset {resolved.name!r} has no field {text_field!r} (it has: "
                f"{', '.join(row)}); pass --text-field with the field that holds the text"
            )
        value = row[text_field]
        if value is not None and not isinstance(value, str):
            raise SraError(
                f"dataset {resolved.name!r} field {text_field!r} is {type(value).__name__}, "
                "not text; pass --text-field with a string field"
            )
        source = f"{label}:{resolved.split}:{index}"
        yield from _record_paragraphs(value, source, stats, max_line_chars)


def _stream_dataset(
    name: str, config: str | None, split: str, fail: Callable[[str], SraError]
) -> Iterator[dict[str, Any]]:
    """Rows of a streamed `datasets` dataset; any failure becomes one SraError line."""
    try:
        import datasets  # heavy import (seconds): only hub/hf corpora need it

        rows = iter(datasets.load_dataset(name, config, split=split, streaming=True))
    except Exception as exc:  # network, auth, unknown name, bad split: all the same to users
        raise fail(_one_line(exc)) from exc
    index = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:
            raise fail(f"failed at row {index}: {_one_line(exc)}") from exc
        yield row
        index += 1
