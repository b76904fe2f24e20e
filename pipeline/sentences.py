"""Sentences: split corpus paragraphs, filter them, drop exact duplicates, apply a limit.

The splitter is blingfire (`blingfire.text_to_sentences`): a compiled, fast, maintained
(Microsoft) sentence breaker. The consumer is a BERT teacher eating ~700 sentences/s and this
stream has to stay far ahead of it on one core; pysbd, the usual rule-based alternative, is
pure Python and about 100x slower, so it would become the bottleneck of stage one.

The output is a deterministic sequence of (sentence, source) pairs: the sentence cache uses
positions in it as ids and a resumed run replays it, so nothing here may depend on hash
seeds, time or input timing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import blingfire
import numpy as np

from cache.errors import SraError
from cache.options import option
from pipeline.corpus import CorpusSpec, CorpusStats, Paragraph, iter_paragraphs

__all__ = [
    "CorpusStats",
    "Deduper",
    "FilterConfig",
    "describe_filters",
    "is_heading",
    "is_list_item",
    "iter_sentences",
    "split_sentences",
    "splitter_info",
]

# Bump when a filter rule changes meaning, so cache fingerprints change with it.
FILTER_RULES_VERSION = 1
HEADING_MAX_WORDS = 8

# "## Title" (markdown) and "== Title ==" (MediaWiki source). A single "# " is left to the
# list rule: in wiki text it is a MediaWiki numbered item or a code comment, not a title.
_MARKUP_HEADING = re.compile(r"#{2,6}(?:\s|$)|=.*=$")
# "* item", "- item", "• item", "# item", "1. item", "1) item".
_LIST_ITEM = re.compile(r"(?:[*\-•#]|\d{1,3}[.)])\s")
# A heading names something, a sentence says something: these words (checked on the real
# dump) turn "Mars is the fourth planet from the Sun." from a heading back into a sentence.
_FINITE_VERBS = frozenset(
    {"is", "are", "was", "were", "has", "have", "had", "will", "would", "can", "could"}
    | {"may", "might", "must", "should", "does", "did"}
)
_SENTENCE_END = ".!?…"
_CLOSERS = "\"')]}»”’"
_INNER_PUNCT = frozenset(".!?;:")


@dataclass(frozen=True)
class FilterConfig:
    """What counts as a usable sentence; part of the cache fingerprint."""

    min_words: int = option(5, "Drop sentences with fewer words.")
    max_words: int = option(128, "Drop sentences with more words.")
    # A longer "line" is a broken file or a table dump, not prose; it is cut, and counted.
    max_line_chars: int = option(20_000, "Truncate longer input lines (and count them).")
    drop_headings: bool = option(True, "Drop short title-like lines (wiki section headings).")
    drop_lists: bool = option(True, "Drop list items (*, -, 1. ...).")
    dedup: bool = option(True, "Drop exact duplicate sentences.")
    dedup_slots: int = option(
        1 << 24, "Slots of the exact-dedup table: 8 bytes each (bounded memory).", hidden=True
    )

    def __post_init__(self) -> None:
        if self.min_words < 0:
            raise SraError(f"min_words must be >= 0, got {self.min_words}")
        if self.max_words < max(self.min_words, 1):
            raise SraError(
                f"max_words ({self.max_words}) must be >= 1 and >= min_words ({self.min_words})"
            )
        if self.max_line_chars < 1:
            raise SraError(f"max_line_chars must be >= 1, got {self.max_line_chars}")
        if self.dedup_slots < Deduper.MIN_SLOTS:
            raise SraError(f"dedup_slots must be >= {Deduper.MIN_SLOTS}, got {self.dedup_slots}")


# ---------------------------------------------------------------------------- splitting


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` per blingfire, stripped, empty ones removed."""
    return [
        s for s in (part.strip() for part in blingfire.text_to_sentences(text).split("\n")) if s
    ]


def splitter_info() -> dict[str, str]:
    return {"name": "blingfire", "version": importlib.metadata.version("blingfire")}


# ---------------------------------------------------------------------------- filters


def is_heading(paragraph: Paragraph, wiki: bool) -> bool:
    """Whether a paragraph is a heading rather than prose.

    Always: wiki title lines and markup headings ("## ...", "== ... =="). For wiki corpora
    also a line of at most HEADING_MAX_WORDS words that either
    - has no sentence-final punctuation (hub text renders "== History ==" as "History";
      list lead-ins such as "Notable people include:" are useless without their list), or
    - ends in its only "." with no other ".!?;:" inside (WikiExtractor renders the heading
      as "History."), does not start lowercase (a wrapped continuation line) and has no
      finite verb from _FINITE_VERBS (a short real sentence).
    The short-line rules are wiki-only: in a one-sentence-per-line text corpus they would
    eat real short sentences.
    """
    text = paragraph.text
    if paragraph.is_title or _MARKUP_HEADING.match(text):
        return True
    if not wiki or len(text.split(None, HEADING_MAX_WORDS)) > HEADING_MAX_WORDS:
        return False
    core = text.rstrip(_CLOSERS)
    if not core or core[-1] not in _SENTENCE_END:
        return True
    return (
        text[-1] == "."
        and _INNER_PUNCT.isdisjoint(text[:-1])
        and not text[0].islower()
        and _FINITE_VERBS.isdisjoint(text[:-1].lower().split())
    )


def is_list_item(text: str) -> bool:
    return _LIST_ITEM.match(text) is not None


# ---------------------------------------------------------------------------- dedup


class Deduper:
    """Exact dedup of sentence texts in fixed memory.

    An open-addressing table (linear probing) of 64-bit blake2b hashes in a numpy uint64
    array: 8 bytes per slot, never more. When it is 70% full it is cleared, so duplicates
    are caught exactly within a window of ~0.7 * slots distinct sentences; a repeat further
    apart than that is let through once more. blake2b, not `hash()`, because str hashing is
    salted per process and the stream must be the same on every run. A 64-bit collision
    would drop one distinct sentence; with ~11.7M hashes stored (the default window) a new
    sentence collides with probability ~6e-13, harmless even over billions of sentences.
    """

    MIN_SLOTS = 8
    MAX_LOAD = 0.7

    def __init__(self, slots: int) -> None:
        if slots < self.MIN_SLOTS:
            raise SraError(f"dedup slots must be >= {self.MIN_SLOTS}, got {slots}")
        self.slots = slots
        # Strictly below `slots`, so a probe always reaches an empty cell and terminates.
        self.capacity = min(max(1, int(slots * self.MAX_LOAD)), slots - 1)
        self.size = 0
        self.resets = 0
        self._allocate()

    def _allocate(self) -> None:
        # np.zeros is calloc-backed: a fresh table costs no time until its pages are used.
        self._table = np.zeros(self.slots, dtype=np.uint64)
        # A memoryview reads and writes cells as Python ints, faster than numpy scalars.
        self._cells = memoryview(self._table)

    def seen(self, text: str) -> bool:
        """True if `text` was seen in the current window; otherwise record it, False."""
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        key = int.from_bytes(digest, "little") or 1  # 0 marks an empty cell
        cells = self._cells
        slots = self.slots
        index = key % slots
        while True:
            cell = cells[index]
            if cell == key:
                return True
            if cell == 0:
                break
            index += 1
            if index == slots:
                index = 0
        cells[index] = key
        self.size += 1
        if self.size >= self.capacity:
            self.reset()
        return False

    def reset(self) -> None:
        self._allocate()
        self.size = 0
        self.resets += 1


# ---------------------------------------------------------------------------- the stream


def iter_sentences(
    spec: CorpusSpec, filters: FilterConfig, limit: int | None, stats: CorpusStats
) -> Iterator[tuple[str, str]]:
    """Yield (sentence, source) in corpus order, stopping after `limit` emitted sentences.

    The spec, filters and limit are checked now, so a bad one fails at the call.
    """
    if limit is not None and limit < 0:
        raise SraError(f"limit must be >= 0 or unset, got {limit}")
    paragraphs = iter_paragraphs(spec, stats, max_line_chars=filters.max_line_chars)
    return _filtered(paragraphs, filters, limit, stats, wiki=spec.corpus.strip() == "wiki")


def _filtered(
    paragraphs: Iterator[Paragraph],
    filters: FilterConfig,
    limit: int | None,
    stats: CorpusStats,
    wiki: bool,
) -> Iterator[tuple[str, str]]:
    if limit == 0:
        return
    deduper = Deduper(filters.dedup_slots) if filters.dedup else None
    resets_before = stats.dedup_resets
    min_words, max_words = filters.min_words, filters.max_words
    emitted = 0
    for paragraph in paragraphs:
        if filters.drop_headings and is_heading(paragraph, wiki):
            stats.dropped_headings += 1
            continue
        if filters.drop_lists and is_list_item(paragraph.text):
            stats.dropped_lists += 1
            continue
        for sentence in split_sentences(paragraph.text):
            stats.sentences += 1
            words = len(sentence.split())
            if words < min_words:
                stats.dropped_short += 1
                continue
            if words > max_words:
                stats.dropped_long += 1
                continue
            if deduper is not None:
                if deduper.seen(sentence):
                    stats.duplicates += 1
                    continue
                stats.dedup_resets = resets_before + deduper.resets
            stats.emitted += 1
            yield sentence, paragraph.source
            emitted += 1
            if emitted == limit:
                return


def describe_filters(filters: FilterConfig) -> dict[str, Any]:
    """JSON for the manifest and fingerprint: every filter field plus the splitter."""
    return {**asdict(filters), "rules_version": FILTER_RULES_VERSION, "splitter": splitter_info()}
