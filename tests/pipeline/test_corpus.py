"""Corpus sources: every format, its errors, and the manifest description."""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cache.errors import SraError
from pipeline.corpus import (
    CorpusSpec,
    CorpusStats,
    Paragraph,
    describe_corpus,
    iter_paragraphs,
)

WIKI_DUMP = """\
<doc id="12" url="http://en.wikipedia.org/wiki?curid=12" title="Anarchism">
Anarchism

Anarchism is a political philosophy that advocates stateless societies.
History.
The earliest anarchist themes can be found in the 6th century BC.
</doc>
stray text outside any article
<doc id="25" url="http://en.wikipedia.org/wiki?curid=25" title="Star Wars: "A New Hope"">
Star Wars: "A New Hope"

It is a 1977 film written and directed by George Lucas.
</doc>
"""


def read_all(spec: CorpusSpec, max_line_chars: int = 20_000) -> tuple[list[Paragraph], CorpusStats]:
    stats = CorpusStats()
    return list(iter_paragraphs(spec, stats, max_line_chars=max_line_chars)), stats


def pairs(paragraphs: list[Paragraph]) -> list[tuple[str, str]]:
    return [(p.text, p.source) for p in paragraphs]


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    return write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def write_parquet(path: Path, columns: dict[str, list[Any]], row_group_size: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


@pytest.fixture(autouse=True)
def _no_wiki_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's PIPELINE_WIKI_DUMP must not leak into tests that expect the hub path.
    monkeypatch.delenv("PIPELINE_WIKI_DUMP", raising=False)


# ---------------------------------------------------------------------------- text files


@pytest.mark.parametrize("name", ["corpus.txt", "corpus.txt.gz"])
def test_text_file_yields_stripped_nonblank_lines_with_line_numbers(
    tmp_path: Path, name: str
) -> None:
    path = write_bytes(tmp_path / name, b"First line here.\n\n   \n  Second line.  \r\nlast")
    paragraphs, stats = read_all(CorpusSpec(str(path)))
    assert pairs(paragraphs) == [
        ("First line here.", f"{name}:1"),
        ("Second line.", f"{name}:4"),
        ("last", f"{name}:5"),
    ]
    assert stats.lines == 5
    assert stats.paragraphs == 3
    assert not any(p.is_title for p in paragraphs)


def test_gzip_is_detected_by_content_not_only_extension(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(gzip.compress(b"compressed but named .txt\n"))
    assert pairs(read_all(CorpusSpec(str(path)))[0]) == [
        ("compressed but named .txt", "corpus.txt:1")
    ]


def test_corrupt_gzip_is_a_pipeline_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(gzip.compress(b"some text\n" * 1000)[:-40])
    with pytest.raises(SraError, match="cannot read .*broken.txt.gz"):
        read_all(CorpusSpec(str(path)))


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "bom.txt", "\ufeffHello world.\nSecond.\n".encode())
    assert [p.text for p in read_all(CorpusSpec(str(path)))[0]] == ["Hello world.", "Second."]


def test_non_utf8_bytes_are_replaced_and_counted_not_skipped(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "latin1.txt", b"caf\xe9 au lait\nclean line\n\xff\xfe bad\n")
    paragraphs, stats = read_all(CorpusSpec(str(path)))
    assert [p.text for p in paragraphs] == ["caf\ufffd au lait", "clean line", "\ufffd\ufffd bad"]
    assert stats.non_utf8_lines == 2


@pytest.mark.parametrize("newline", [b"\n", b""])
def test_one_megabyte_line_is_truncated_counted_and_fast(tmp_path: Path, newline: bytes) -> None:
    path = write_bytes(tmp_path / "long.txt", b"short line\n" + b"x" * 1_000_000 + newline)
    start = time.perf_counter()
    paragraphs, stats = read_all(CorpusSpec(str(path)), max_line_chars=1000)
    elapsed = time.perf_counter() - start
    assert [len(p.text) for p in paragraphs] == [10, 1000]
    assert stats.long_lines_truncated == 1
    assert stats.lines == 2
    assert elapsed < 5  # generous: it takes milliseconds, a quadratic bug takes minutes


def test_line_after_a_long_line_is_read_intact(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "long.txt", b"y" * 300_000 + b"\nafter the long line\n")
    paragraphs, stats = read_all(CorpusSpec(str(path)), max_line_chars=50)
    assert pairs(paragraphs) == [("y" * 50, "long.txt:1"), ("after the long line", "long.txt:2")]
    assert stats.long_lines_truncated == 1


def test_truncating_multibyte_text_is_not_counted_as_bad_utf8(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "accents.txt", ("é€😀" * 100_000 + "\n").encode())
    paragraphs, stats = read_all(CorpusSpec(str(path)), max_line_chars=100)
    assert paragraphs[0].text == ("é€😀" * 34)[:100]
    assert stats.long_lines_truncated == 1
    assert stats.non_utf8_lines == 0


# ---------------------------------------------------------------------------- jsonl


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz"])
def test_jsonl_reads_text_field_and_splits_records_into_lines(tmp_path: Path, name: str) -> None:
    path = write_jsonl(
        tmp_path / name,
        [{"text": "One record.", "id": 1}, {"text": None}, {"text": "Line a.\n\nLine b."}],
    )
    paragraphs, _ = read_all(CorpusSpec(str(path)))
    assert pairs(paragraphs) == [
        ("One record.", f"{name}:1"),
        ("Line a.", f"{name}:3"),
        ("Line b.", f"{name}:3"),
    ]


def test_jsonl_lines_are_counted_once_and_empty_records_are_counted(tmp_path: Path) -> None:
    records = [{"text": "One."}, {"text": None}, {"text": "  "}, {"text": "A.\nB."}, {"text": ""}]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    paragraphs, stats = read_all(CorpusSpec(str(path)))
    assert [p.text for p in paragraphs] == ["One.", "A.", "B."]
    assert stats.lines == 5  # the file's lines, not those plus the lines inside records
    assert stats.empty_records == 3


def test_parquet_null_and_blank_rows_are_counted(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "r.parquet", {"text": ["Fine.", None, " ", "Also."]})
    paragraphs, stats = read_all(CorpusSpec(str(path)))
    assert [p.text for p in paragraphs] == ["Fine.", "Also."] and stats.empty_records == 2


def test_gzipped_parquet_is_refused_with_the_way_out(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "r.parquet.gz", b"x")
    with pytest.raises(SraError, match="gunzip it and pass the .parquet file"):
        read_all(CorpusSpec(str(path)))


def test_check_files_reads_the_first_records_of_every_file(tmp_path: Path) -> None:
    from pipeline.corpus import check_files

    write_bytes(tmp_path / "c" / "a.txt", b"Fine text.\n")
    write_bytes(tmp_path / "c" / "b.jsonl", b'{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(SraError, match=r"b\.jsonl:2 is not valid JSON"):
        check_files(CorpusSpec(str(tmp_path / "c")))
    late = [json.dumps({"text": f"Line {i}."}) for i in range(200)] + ["{oops"]
    write_bytes(tmp_path / "d" / "late.jsonl", ("\n".join(late) + "\n").encode())
    check_files(CorpusSpec(str(tmp_path / "d")))  # only the first records: found later


def test_jsonl_custom_text_field_and_blank_lines(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "d.jsonl", b'{"body": "Hello there."}\n\n{"body": "Again."}\n')
    paragraphs, _ = read_all(CorpusSpec(str(path), text_field="body"))
    assert pairs(paragraphs) == [("Hello there.", "d.jsonl:1"), ("Again.", "d.jsonl:3")]


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "bad.jsonl", b'{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(SraError, match=r"bad\.jsonl:2 is not valid JSON") as info:
        read_all(CorpusSpec(str(path)))
    assert "\n" not in str(info.value)


def test_jsonl_missing_field_lists_the_fields_it_has(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "x", "lang": "en"}])
    with pytest.raises(SraError, match=r"d\.jsonl:1 has no field 'text' \(it has: body, lang\)"):
        read_all(CorpusSpec(str(path)))


def test_jsonl_non_string_field_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": 42}])
    with pytest.raises(SraError, match="is int, not text"):
        read_all(CorpusSpec(str(path)))


def test_jsonl_lone_surrogate_escape_is_replaced_and_counted(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "d.jsonl", b'{"text": "bad \\ud800 escape"}\n')
    paragraphs, stats = read_all(CorpusSpec(str(path)))
    assert paragraphs[0].text == "bad \ufffd escape"
    assert stats.non_utf8_lines == 1


def test_jsonl_long_text_lines_are_truncated(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "z" * 5000 + "\nshort"}])
    paragraphs, stats = read_all(CorpusSpec(str(path)), max_line_chars=100)
    assert [len(p.text) for p in paragraphs] == [100, 5]
    assert stats.long_lines_truncated == 1


# ---------------------------------------------------------------------------- parquet


def test_parquet_is_read_in_batches_in_row_order(tmp_path: Path) -> None:
    texts = [f"Row number {i} text." for i in range(2500)]
    texts[7] = None  # type: ignore[call-overload]
    path = write_parquet(tmp_path / "rows.parquet", {"text": texts, "n": list(range(2500))}, 600)
    paragraphs, _ = read_all(CorpusSpec(str(path)))
    assert len(paragraphs) == 2499
    assert pairs(paragraphs)[:2] == [
        ("Row number 0 text.", "rows.parquet:1"),
        ("Row number 1 text.", "rows.parquet:2"),
    ]
    assert paragraphs[7].source == "rows.parquet:9"  # row 8 (None) produced nothing
    assert paragraphs[-1].source == "rows.parquet:2500"


def test_parquet_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", {"body": ["a"], "id": [1]})
    with pytest.raises(SraError, match=r"no column 'text' \(it has: body, id\)"):
        read_all(CorpusSpec(str(path)))


def test_parquet_custom_column(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", {"body": ["Some body text."]})
    paragraphs, _ = read_all(CorpusSpec(str(path), text_field="body"))
    assert pairs(paragraphs) == [("Some body text.", "rows.parquet:1")]


def test_not_a_parquet_file_is_a_pipeline_error(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "fake.parquet", b"definitely not parquet")
    with pytest.raises(SraError, match="cannot read .*fake.parquet as parquet"):
        read_all(CorpusSpec(str(path)))


# ---------------------------------------------------------------------------- directories


def test_directory_reads_supported_files_recursively_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write_bytes(root / "z.txt", b"from z\n")
    write_parquet(root / "b" / "c.parquet", {"text": ["from c"]})
    write_jsonl(root / "b" / "a.jsonl.gz", [{"text": "from b/a"}])
    write_bytes(root / "a.txt", b"from a\n")
    write_bytes(root / "README.md", b"not corpus text\n")
    write_bytes(root / ".hidden" / "x.txt", b"hidden\n")
    paragraphs, _ = read_all(CorpusSpec(str(root)))
    assert pairs(paragraphs) == [
        ("from a", "a.txt:1"),
        ("from b/a", "b/a.jsonl.gz:1"),
        ("from c", "b/c.parquet:1"),
        ("from z", "z.txt:1"),
    ]


def test_directory_without_supported_files_is_an_error(tmp_path: Path) -> None:
    write_bytes(tmp_path / "notes.md", b"text\n")
    with pytest.raises(SraError, match="contains no supported files"):
        read_all(CorpusSpec(str(tmp_path)))


def test_directory_of_empty_files_is_an_error(tmp_path: Path) -> None:
    write_bytes(tmp_path / "a.txt", b"")
    write_bytes(tmp_path / "b.txt", b"\n  \n")
    with pytest.raises(SraError, match="contains no text"):
        read_all(CorpusSpec(str(tmp_path)))


# ---------------------------------------------------------------------------- bad paths


@pytest.mark.parametrize("content", [b"", b"\n\n   \n", b"\xef\xbb\xbf\n"])
def test_empty_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = write_bytes(tmp_path / "empty.txt", content)
    with pytest.raises(SraError, match="contains no text"):
        read_all(CorpusSpec(str(path)))


def test_missing_path_fails_at_call_time(tmp_path: Path) -> None:
    with pytest.raises(SraError, match="does not exist"):
        iter_paragraphs(CorpusSpec(str(tmp_path / "nope.txt")), CorpusStats())


def test_unsupported_extension_lists_supported_ones(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "corpus.csv", b"a,b\n")
    with pytest.raises(SraError, match=r"unsupported extension; use one of .*\.jsonl"):
        read_all(CorpusSpec(str(path)))


def test_empty_corpus_string_is_an_error() -> None:
    with pytest.raises(SraError, match="corpus is empty"):
        read_all(CorpusSpec(""))


# ---------------------------------------------------------------------------- wiki dump


@pytest.mark.parametrize("name", ["dump.txt", "dump.txt.gz"])
def test_wiki_dump_articles_titles_and_sources(tmp_path: Path, name: str) -> None:
    dump = write_bytes(tmp_path / name, WIKI_DUMP.encode())
    paragraphs, _ = read_all(CorpusSpec("wiki", wiki_dump=str(dump)))
    assert [(p.text, p.source, p.is_title) for p in paragraphs] == [
        ("Anarchism", "wiki:12:Anarchism", True),
        (
            "Anarchism is a political philosophy that advocates stateless societies.",
            "wiki:12:Anarchism",
            False,
        ),
        ("History.", "wiki:12:Anarchism", False),
        (
            "The earliest anarchist themes can be found in the 6th century BC.",
            "wiki:12:Anarchism",
            False,
        ),
        ('Star Wars: "A New Hope"', 'wiki:25:Star Wars: "A New Hope"', True),
        (
            "It is a 1977 film written and directed by George Lucas.",
            'wiki:25:Star Wars: "A New Hope"',
            False,
        ),
    ]


def test_wiki_dump_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dump = write_bytes(tmp_path / "dump.txt", WIKI_DUMP.encode())
    monkeypatch.setenv("PIPELINE_WIKI_DUMP", str(dump))
    paragraphs, _ = read_all(CorpusSpec("wiki"))
    assert paragraphs[0].source == "wiki:12:Anarchism"


def test_missing_wiki_dump_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SraError, match="does not exist.*--wiki-dump"):
        iter_paragraphs(CorpusSpec("wiki", wiki_dump=str(tmp_path / "nope.gz")), CorpusStats())


def test_malformed_doc_header_names_the_line(tmp_path: Path) -> None:
    dump = write_bytes(tmp_path / "dump.txt", b"<doc broken>\ntext\n</doc>\n")
    with pytest.raises(SraError, match=r"dump\.txt:1: malformed article header"):
        read_all(CorpusSpec("wiki", wiki_dump=str(dump)))


def test_dump_without_articles_is_an_error(tmp_path: Path) -> None:
    dump = write_bytes(tmp_path / "dump.txt", b"just some text, no doc blocks\n")
    with pytest.raises(SraError, match=r"has text but no <doc \.\.\.> articles"):
        read_all(CorpusSpec("wiki", wiki_dump=str(dump)))
    empty = write_bytes(tmp_path / "empty.txt", b"\n\n")
    with pytest.raises(SraError, match="contains no text"):
        read_all(CorpusSpec("wiki", wiki_dump=str(empty)))


# ---------------------------------------------------------------------------- wiki hub


def test_wiki_without_dump_or_hub_names_both_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SraError) as info:
        read_all(CorpusSpec("wiki"))
    message = str(info.value)
    assert "--wiki-dump" in message and "PIPELINE_WIKI_DUMP" in message
    assert "internet" in message and "\n" not in message


def fake_datasets(monkeypatch: pytest.MonkeyPatch, load_dataset: Any) -> list[tuple]:
    """Install a stand-in `datasets` module; returns the recorded load_dataset calls."""
    calls: list[tuple] = []

    def load(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return load_dataset(*args, **kwargs)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return calls


def test_wiki_hub_unreachable_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach\n'https://huggingface.co'")

    fake_datasets(monkeypatch, unreachable)
    with pytest.raises(SraError, match="Couldn't reach 'https://huggingface.co'.*--wiki-dump"):
        read_all(CorpusSpec("wiki"))


def test_wiki_hub_failing_on_first_row_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_rows() -> Iterator[dict]:
        raise TimeoutError("read timed out")
        yield {}

    fake_datasets(monkeypatch, lambda *a, **k: failing_rows())
    with pytest.raises(SraError, match="read timed out.*--wiki-dump"):
        read_all(CorpusSpec("wiki"))


def test_wiki_hub_rows_become_paragraphs(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {"id": "12", "url": "u", "title": "Anarchism", "text": "First para.\n\nHistory\nSecond."},
        {"id": "25", "url": "u", "title": "Albedo", "text": "Albedo is reflectance."},
    ]
    calls = fake_datasets(monkeypatch, lambda *a, **k: iter(rows))
    paragraphs, _ = read_all(CorpusSpec("wiki", split="ignored"))
    assert pairs(paragraphs) == [
        ("First para.", "wiki:12:Anarchism"),
        ("History", "wiki:12:Anarchism"),
        ("Second.", "wiki:12:Anarchism"),
        ("Albedo is reflectance.", "wiki:25:Albedo"),
    ]
    assert calls == [
        (("wikimedia/wikipedia", "20231101.en"), {"split": "train", "streaming": True})
    ]


# ---------------------------------------------------------------------------- hf datasets


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hfdata"
    write_jsonl(folder / "part-0.jsonl", [{"text": "Alpha row text.", "n": 1}])
    write_jsonl(folder / "part-1.jsonl", [{"text": "Beta row.\nGamma line.", "n": 2}])
    return folder


def test_hf_local_folder_streams_through_datasets(hf_folder: Path) -> None:
    paragraphs, _ = read_all(CorpusSpec(f"hf:{hf_folder}"))
    assert pairs(paragraphs) == [
        ("Alpha row text.", f"hf:{hf_folder}:train:0"),
        ("Beta row.", f"hf:{hf_folder}:train:1"),
        ("Gamma line.", f"hf:{hf_folder}:train:1"),
    ]


def test_hf_missing_field_lists_fields(hf_folder: Path) -> None:
    with pytest.raises(SraError, match=r"no field 'body' \(it has: text, n\)"):
        read_all(CorpusSpec(f"hf:{hf_folder}", text_field="body"))


def test_hf_unknown_split_or_dataset_is_one_line_error(hf_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(SraError, match="cannot load Hugging Face dataset.*'validation'"):
        read_all(CorpusSpec(f"hf:{hf_folder}", split="validation"))
    with pytest.raises(SraError, match="cannot load Hugging Face dataset") as info:
        read_all(CorpusSpec(f"hf:{tmp_path / 'missing'}"))
    assert "\n" not in str(info.value)


def test_hf_name_and_config_are_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_datasets(monkeypatch, lambda *a, **k: iter([{"text": "Row."}]))
    paragraphs, _ = read_all(CorpusSpec("hf:org/name:cfg", split="test"))
    assert calls == [(("org/name", "cfg"), {"split": "test", "streaming": True})]
    assert paragraphs[0].source == "hf:org/name:cfg:test:0"


def test_hf_without_name_is_an_error() -> None:
    with pytest.raises(SraError, match="names no dataset"):
        read_all(CorpusSpec("hf:"))


# ---------------------------------------------------------------------------- describe


def test_describe_local_files_is_deterministic_and_ignores_mtime(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_bytes(root / "a.txt", b"hello\n")
    write_jsonl(root / "sub" / "b.jsonl", [{"text": "x"}])
    first = describe_corpus(CorpusSpec(str(root)))
    os.utime(root / "a.txt", (1, 1))
    assert describe_corpus(CorpusSpec(str(root))) == first
    assert json.loads(json.dumps(first)) == first
    assert first == {
        "kind": "mixed",
        "path": str(root.resolve()),
        "files": [
            {"path": "a.txt", "kind": "text", "bytes": 6},
            {"path": "sub/b.jsonl", "kind": "jsonl", "bytes": 14},
        ],
        "text_field": "text",
    }
    write_bytes(root / "a.txt", b"hello, changed\n")
    assert describe_corpus(CorpusSpec(str(root))) != first


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.txt", "text"), ("a.txt.gz", "text"), ("a.jsonl", "jsonl"), ("a.parquet", "parquet")],
)
def test_describe_kind_per_format(tmp_path: Path, name: str, kind: str) -> None:
    path = tmp_path / name
    if kind == "parquet":
        write_parquet(path, {"text": ["x"]})
    else:
        write_bytes(path, b'{"text": "x"}\n')
    info = describe_corpus(CorpusSpec(str(path)))
    assert info["kind"] == kind
    assert info["files"][0]["bytes"] == path.stat().st_size


def test_describe_wiki_dump_and_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dump = write_bytes(tmp_path / "dump.txt.gz", WIKI_DUMP.encode())
    assert describe_corpus(CorpusSpec("wiki", wiki_dump=str(dump))) == {
        "kind": "wiki-dump",
        "path": str(dump.resolve()),
        "bytes": dump.stat().st_size,
    }
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # describing must not touch the network
    assert describe_corpus(CorpusSpec("wiki")) == {
        "kind": "wiki-hub",
        "name": "wikimedia/wikipedia",
        "config": "20231101.en",
        "split": "train",
    }


def test_describe_hf(hf_folder: Path) -> None:
    assert describe_corpus(CorpusSpec("hf:org/name:cfg", split="test")) == {
        "kind": "hf",
        "name": "org/name",
        "config": "cfg",
        "split": "test",
        "text_field": "text",
    }
    local = describe_corpus(CorpusSpec(f"hf:{hf_folder}"))
    assert local["path"] == str(hf_folder.resolve())
    assert [f["path"] for f in local["files"]] == ["part-0.jsonl", "part-1.jsonl"]


def test_describe_validates_paths(tmp_path: Path) -> None:
    with pytest.raises(SraError, match="does not exist"):
        describe_corpus(CorpusSpec(str(tmp_path / "missing")))


def test_stats_as_dict_has_every_counter() -> None:
    assert set(CorpusStats().as_dict()) == {
        "lines",
        "empty_records",
        "non_utf8_lines",
        "long_lines_truncated",
        "paragraphs",
        "sentences",
        "dropped_headings",
        "dropped_lists",
        "dropped_short",
        "dropped_long",
        "duplicates",
        "emitted",
        "dedup_resets",
    }
