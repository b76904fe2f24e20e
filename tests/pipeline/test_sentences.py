"""Sentence stream: splitting, filters, dedup, limit, determinism, and the real dump."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import time
from pathlib import Path

import pytest

from cache.errors import SraError
from pipeline.corpus import CorpusSpec, CorpusStats, Paragraph
from pipeline.sentences import (
    Deduper,
    FilterConfig,
    describe_filters,
    is_heading,
    is_list_item,
    iter_sentences,
    split_sentences,
    splitter_info,
)

SHARED_DUMP_NAME = "enwiki_2015_wikiextractor_AA-AB.txt.gz"

TINY_DUMP = """\
<doc id="12" url="http://en.wikipedia.org/wiki?curid=12" title="Anarchism">
Anarchism

Anarchism is a political philosophy that advocates stateless societies. It is often defined \
as self-governed voluntary institutions.
Etymology and terminology.
The term anarchism is a compound word composed from the word anarchy.
* This bullet item has more than five words.
1. This numbered item also has enough words.
It was short.
Anarchism is a political philosophy that advocates stateless societies.
</doc>
<doc id="25" url="http://en.wikipedia.org/wiki?curid=25" title="Autism">
Autism

Autism is a neurodevelopmental disorder characterized by impaired social interaction.
Mars is the fourth planet from the Sun.
Characteristics.
</doc>
"""

TINY_DUMP_SENTENCES = [
    (
        "Anarchism is a political philosophy that advocates stateless societies.",
        "wiki:12:Anarchism",
    ),
    ("It is often defined as self-governed voluntary institutions.", "wiki:12:Anarchism"),
    ("The term anarchism is a compound word composed from the word anarchy.", "wiki:12:Anarchism"),
    (
        "Autism is a neurodevelopmental disorder characterized by impaired social interaction.",
        "wiki:25:Autism",
    ),
    ("Mars is the fourth planet from the Sun.", "wiki:25:Autism"),
]


def write(path: Path, text: str) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def run(
    spec: CorpusSpec, filters: FilterConfig | None = None, limit: int | None = None
) -> tuple[list[tuple[str, str]], CorpusStats]:
    stats = CorpusStats()
    return list(iter_sentences(spec, filters or FilterConfig(), limit, stats)), stats


# ---------------------------------------------------------------------------- splitter


def test_split_sentences_strips_and_drops_empty() -> None:
    assert split_sentences("  Hello there Mr. Smith.  How are you?  ") == [
        "Hello there Mr. Smith.",
        "How are you?",
    ]
    assert split_sentences("") == []
    assert split_sentences("   ") == []


def test_splitter_info_names_blingfire_and_its_version() -> None:
    info = splitter_info()
    assert info["name"] == "blingfire"
    assert re.fullmatch(r"\d+(\.\d+)+.*", info["version"])


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("text", "wiki", "expected"),
    [
        ("History.", True, True),
        ("Etymology and terminology.", True, True),
        ("Russian Revolution and other uprisings of the 1910s.", True, True),
        ("Mongol invasion (1223–1240).", True, True),
        ("Notable people", True, True),  # hub-style heading: no final punctuation
        ("Bordeaux was the birthplace of:", True, True),  # list lead-in without its list
        ("Mars is the fourth planet from the Sun.", True, False),  # finite verb: a sentence
        ("whether it has a certain nontrivial property.", True, False),  # continuation line
        ("Mr. Smith and his friends.", True, False),  # inner full stop
        ("Where did it go? Nobody knows.", True, False),
        ("Anarchism is a political philosophy that advocates stateless societies.", True, False),
        ("History.", False, False),  # short-line rules are wiki-only
        ("The cat sat on the mat.", False, False),
        ("## Results", False, True),
        ("== History ==", False, True),
        ("# numbered item text", False, False),  # a list item, not a heading
    ],
)
def test_is_heading(text: str, wiki: bool, expected: bool) -> None:
    assert is_heading(Paragraph(text, "src"), wiki) is expected


def test_title_lines_are_headings_everywhere() -> None:
    assert is_heading(Paragraph("Anarchism", "wiki:12:Anarchism", is_title=True), False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("* starred item", True),
        ("- dashed item", True),
        ("• bullet item", True),
        ("# numbered item", True),
        ("1. first item", True),
        ("12) twelfth item", True),
        ("-5 degrees is cold.", False),
        ("1.5 million people live there.", False),
        ("1990 was a year.", False),
        ("*NSYNC is a band.", False),
    ],
)
def test_is_list_item(text: str, expected: bool) -> None:
    assert is_list_item(text) is expected


@pytest.mark.parametrize("name", ["dump.txt", "dump.txt.gz"])
def test_tiny_wiki_dump_drops_titles_headings_lists_short_and_duplicates(
    tmp_path: Path, name: str
) -> None:
    dump = write(tmp_path / name, TINY_DUMP)
    sentences, stats = run(CorpusSpec("wiki", wiki_dump=str(dump)))
    assert sentences == TINY_DUMP_SENTENCES
    assert stats.dropped_headings == 4  # two titles, "Etymology and terminology.", "Char..."
    assert stats.dropped_lists == 2
    assert stats.dropped_short == 1  # "It was short." (its verb makes it no heading)
    assert stats.duplicates == 1  # the repeated first sentence
    assert stats.emitted == len(TINY_DUMP_SENTENCES)
    assert stats.sentences == stats.emitted + stats.dropped_short + stats.duplicates


def test_filters_can_be_switched_off(tmp_path: Path) -> None:
    dump = write(tmp_path / "dump.txt", TINY_DUMP)
    filters = FilterConfig(min_words=1, drop_headings=False, drop_lists=False, dedup=False)
    sentences, stats = run(CorpusSpec("wiki", wiki_dump=str(dump)), filters)
    texts = [s for s, _ in sentences]
    assert "Anarchism" in texts and "Etymology and terminology." in texts
    assert "* This bullet item has more than five words." in texts
    assert (
        texts.count("Anarchism is a political philosophy that advocates stateless societies.") == 2
    )
    assert stats.dropped_headings == stats.dropped_lists == stats.duplicates == 0


def test_word_filters_apply_per_sentence(tmp_path: Path) -> None:
    long_sentence = "Then " + " ".join(["more"] * 11) + "."
    corpus = write(tmp_path / "c.txt", f"Two words. Exactly four words here. {long_sentence}\n")
    sentences, stats = run(CorpusSpec(str(corpus)), FilterConfig(min_words=3, max_words=10))
    assert sentences == [("Exactly four words here.", "c.txt:1")]
    assert stats.dropped_short == 1
    assert stats.dropped_long == 1


def test_text_corpus_keeps_short_period_lines(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.txt", "The cat sat on the mat.\n# item one two three four\n")
    sentences, stats = run(CorpusSpec(str(corpus)))
    assert sentences == [("The cat sat on the mat.", "c.txt:1")]
    assert stats.dropped_lists == 1


# ---------------------------------------------------------------------------- dedup


def test_deduper_remembers_and_reports() -> None:
    deduper = Deduper(64)
    assert deduper.seen("a sentence") is False
    assert deduper.seen("another sentence") is False
    assert deduper.seen("a sentence") is True
    assert deduper.size == 2
    assert deduper.seen("") is False and deduper.seen("") is True


def test_deduper_resets_at_capacity_with_fixed_memory() -> None:
    deduper = Deduper(8)
    assert deduper.capacity == 5  # 70% of 8
    assert deduper._table.nbytes == 8 * 8
    for i in range(4):
        assert deduper.seen(f"s{i}") is False
    assert deduper.resets == 0 and deduper.seen("s0") is True
    assert deduper.seen("s4") is False  # fifth distinct: table is cleared
    assert deduper.resets == 1 and deduper.size == 0
    assert deduper.seen("s0") is False  # forgotten after the reset
    assert deduper._table.nbytes == 8 * 8


def test_deduper_matches_a_windowed_set_model() -> None:
    slots = 64
    deduper = Deduper(slots)
    window: set[str] = set()
    rng = random.Random(0)
    for _ in range(5000):
        text = f"sentence {rng.randrange(120)}"
        expected = text in window
        if not expected:
            window.add(text)
            if len(window) >= deduper.capacity:
                window.clear()
        assert deduper.seen(text) is expected
    assert deduper.resets > 10


def test_deduper_rejects_tiny_tables() -> None:
    with pytest.raises(SraError, match="dedup slots"):
        Deduper(4)


def test_dedup_resets_are_counted_in_stats(tmp_path: Path) -> None:
    lines = [f"This is distinct sentence number {i}." for i in range(30)]
    corpus = write(tmp_path / "c.txt", "\n".join(lines * 2) + "\n")
    sentences, stats = run(CorpusSpec(str(corpus)), FilterConfig(dedup_slots=16))
    assert stats.dedup_resets == 60 // 11  # capacity int(0.7 * 16) = 11 distinct per window
    assert len(sentences) == 60  # the window is shorter than the repeat distance
    sentences, stats = run(CorpusSpec(str(corpus)), FilterConfig(dedup_slots=1024))
    assert len(sentences) == 30 and stats.duplicates == 30 and stats.dedup_resets == 0


# ---------------------------------------------------------------------------- limit, order


def test_limit_stops_early_and_is_a_prefix(tmp_path: Path) -> None:
    lines = [
        f"Sentence number {i} has enough words. And a second one here {i}." for i in range(500)
    ]
    corpus = write(tmp_path / "c.txt", "\n".join(lines) + "\n")
    everything, _ = run(CorpusSpec(str(corpus)))
    first, stats = run(CorpusSpec(str(corpus)), limit=7)
    assert first == everything[:7]
    assert stats.emitted == 7
    assert stats.lines == 4  # it did not read the rest of the corpus
    assert run(CorpusSpec(str(corpus)), limit=0)[0] == []


def test_negative_limit_is_an_error(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.txt", "Some text with words in it.\n")
    with pytest.raises(SraError, match="limit"):
        iter_sentences(CorpusSpec(str(corpus)), FilterConfig(), -1, CorpusStats())


def test_same_inputs_give_the_same_stream(tmp_path: Path) -> None:
    for i in range(3):
        records = [
            {"text": f"Doc {i}-{j} has some words. Shared sentence for all docs."}
            for j in range(50)
        ]
        write(tmp_path / f"part{i}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    filters = FilterConfig(min_words=3, dedup_slots=32)
    first, first_stats = run(CorpusSpec(str(tmp_path)), filters, limit=120)
    second, second_stats = run(CorpusSpec(str(tmp_path)), filters, limit=120)
    assert first == second and len(first) == 120
    assert first_stats == second_stats
    assert first_stats.dedup_resets > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_words": -1},
        {"min_words": 10, "max_words": 5},
        {"max_line_chars": 0},
        {"dedup_slots": 2},
    ],
)
def test_bad_filter_config_is_an_error(kwargs: dict) -> None:
    with pytest.raises(SraError):
        FilterConfig(**kwargs)


def test_describe_filters_is_json_with_fields_and_splitter() -> None:
    info = describe_filters(FilterConfig(min_words=3))
    assert json.loads(json.dumps(info)) == info
    assert info["min_words"] == 3 and info["dedup_slots"] == 1 << 24
    assert info["splitter"] == splitter_info()
    assert describe_filters(FilterConfig(min_words=3)) == info


def test_bad_corpus_fails_at_call_time(tmp_path: Path) -> None:
    with pytest.raises(SraError, match="does not exist"):
        iter_sentences(CorpusSpec(str(tmp_path / "x.txt")), FilterConfig(), None, CorpusStats())


# ---------------------------------------------------------------------------- real dump


def shared_wiki_dump() -> Path | None:
    bases = (
        [Path(os.environ["PIPELINE_SHARED_DATA"])] if "PIPELINE_SHARED_DATA" in os.environ else []
    )
    repo = Path(__file__).resolve().parents[2]
    bases += [repo / "shared" / "data", repo.parent / "shared" / "data"]
    for base in bases:
        if (base / "wiki" / SHARED_DUMP_NAME).is_file():
            return base / "wiki" / SHARED_DUMP_NAME
    return None


@pytest.mark.integration
def test_real_wiki_dump_first_sentences() -> None:
    dump = shared_wiki_dump()
    if dump is None:
        pytest.skip(
            f"shared dump wiki/{SHARED_DUMP_NAME} not found under $PIPELINE_SHARED_DATA, "
            "<repo>/shared/data or <repo>/../shared/data"
        )
    stats = CorpusStats()
    start = time.perf_counter()
    sentences = list(
        iter_sentences(CorpusSpec("wiki", wiki_dump=str(dump)), FilterConfig(), 2000, stats)
    )
    elapsed = time.perf_counter() - start
    print(
        f"\nreal dump: {len(sentences)} sentences in {elapsed:.3f}s "
        f"({len(sentences) / elapsed:,.0f} sentences/s); {stats.as_dict()}"
    )
    assert len(sentences) == 2000
    assert sentences[0][1] == "wiki:12:Anarchism"
    assert all(re.fullmatch(r"wiki:\d+:.+", source) for _, source in sentences)
    texts = {text for text, _ in sentences}
    assert not texts & {"History.", "Etymology and terminology.", "Origins.", "Anarchism"}
    assert all(len(t.split()) >= 5 for t in texts)
    assert stats.dropped_headings > 0 and len(texts) == 2000
