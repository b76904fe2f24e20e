"""The sentences `pipeline bench student` encodes: its ``--sentences`` sets, and the picks
from a set for latency calls and for the BERT-base row.

``stsb`` is the unique sentences of STS-B dev, ``wiki`` 1,000 Wikipedia sentences split and
filtered as ``pipeline embed`` does, anything else a file with one sentence per line. Separate
from ``pipeline/bench/student.py`` (which times models on them) because choosing inputs is its
own concern: reading GLUE TSVs and the dump, not models. ``STS_B_DEV`` is read from
``pipeline/bench/quality.py`` when called (one place for the data paths; tests move it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cache.errors import SraError
from pipeline.bench import quality as bench_quality  # its paths read at call time

WIKI_DUMP = bench_quality.SHARED_DATA / "wiki" / "enwiki_2015_wikiextractor_AA-AB.txt.gz"
WIKI_SAMPLE, WIKI_STRIDE = 1000, 20  # every 20th of the dump's first 20,000 sentences


@dataclass
class SentenceSet:
    name: str
    source: str
    texts: list[str]


def load_set(spec: str | Path, limit: int | None) -> SentenceSet:
    """``stsb``, ``wiki`` or a file (see the module doc), cut to ``limit`` sentences."""
    name = str(spec)
    if name == "stsb":
        if not bench_quality.STS_B_DEV.is_file():
            raise SraError(
                f"STS-B dev is not at {bench_quality.STS_B_DEV} (set PIPELINE_SHARED_DATA); pass "
                "--sentences FILE (one sentence per line)"
            )
        texts, source = (
            _sts_b_sentences(bench_quality.STS_B_DEV),
            f"{bench_quality.STS_B_DEV} (unique sentences)",
        )
    elif name == "wiki":
        texts, source = _wiki_sentences()
    else:
        path = Path(spec)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SraError(f"cannot read --sentences {path}: {e}") from None
        texts, source, name = [x.strip() for x in lines if x.strip()], str(path), path.stem
    if limit is not None:
        texts = texts[:limit]
    if not texts:
        raise SraError(f"no sentences to encode in {source}")
    return SentenceSet(name, source, texts)


def load_sentences(path: Path | None, limit: int | None) -> tuple[list[str], str]:
    """Sentences, one per line of ``path``; by default the unique sentences of STS-B dev."""
    s = load_set(path if path is not None else "stsb", limit)
    return s.texts, s.source


def _sts_b_sentences(path: Path) -> list[str]:
    # GLUE TSVs are unquoted: split on tabs only (STS-B holds raw `"` characters).
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t")
    columns = [header.index("sentence1"), header.index("sentence2")]
    seen: dict[str, None] = {}
    for line in lines[1:]:
        fields = line.split("\t")
        for c in columns:
            if c < len(fields) and fields[c].strip():
                seen.setdefault(fields[c].strip())
    return list(seen)


def _wiki_sentences() -> tuple[list[str], str]:
    """Every 20th of the first 20,000 sentences of the Wikipedia dump, as stage one cuts them."""
    from pipeline.corpus import CorpusSpec, CorpusStats
    from pipeline.sentences import FilterConfig, iter_sentences

    dump = os.environ.get("PIPELINE_WIKI_DUMP") or (str(WIKI_DUMP) if WIKI_DUMP.is_file() else "")
    if not dump:
        raise SraError(
            f"--sentences wiki needs the Wikipedia dump: set PIPELINE_WIKI_DUMP (not found at "
            f"{WIKI_DUMP})"
        )
    stream = iter_sentences(
        CorpusSpec("wiki", wiki_dump=dump),
        FilterConfig(dedup_slots=1 << 20),
        WIKI_SAMPLE * WIKI_STRIDE,
        CorpusStats(),
    )
    texts = [text for i, (text, _) in enumerate(stream) if i % WIKI_STRIDE == 0]
    return texts, f"{dump} (every {WIKI_STRIDE}th of the first {WIKI_SAMPLE * WIKI_STRIDE:,})"


def latency_picks(texts: list[str], samples: int) -> list[str]:
    """``samples`` sentences spread evenly over the set (repeating if it is smaller)."""
    return [texts[i * len(texts) // samples % len(texts)] for i in range(samples)]


def subset(texts: list[str], most: int) -> list[str]:
    # An even spread over the sentences, so its length mix matches the full set's.
    step = max(1, -(-len(texts) // most))
    return texts[::step][:most]
