"""Semantic textual similarity: how well cosine between sentence vectors ranks gold scores.

``evaluate_sts(student, tsv)`` encodes both sides of every pair with the student and reports
Spearman (the usual STS-B number) and Pearson correlation of the cosine similarities with the
gold scores. With ``teacher_cache`` the teacher is scored too, from the vectors stage one
stored for the same sentences (looked up by exact text), so the teacher is never loaded.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import SraError
from cache.options import option

REQUIRED = ("sentence1", "sentence2", "score")


@dataclass(frozen=True)
class StsConfig:
    """Everything `pipeline eval-sts` takes; its fields are the command's options."""

    student: Path = option(MISSING, "Student folder (a pipeline train run).")
    data: Path = option(MISSING, "TSV with sentence1, sentence2, score columns (STS-B).")
    teacher_cache: Path | None = option(
        None, "Cache of the same sentences: also score the teacher, from its vectors."
    )
    pooling: str | None = option(
        None, "Teacher vectors in --teacher-cache (default: the student's teacher pooling)."
    )
    json_path: Path | None = option(None, "Also write the results here.", flag="json")
    batch_size: int = option(256, "Sentences per student batch.")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise SraError(f"--batch-size must be >= 1, got {self.batch_size}")


@dataclass
class Pairs:
    first: list[str]
    second: list[str]
    scores: np.ndarray
    skipped: int = 0  # lines without all three fields or with a non-numeric score
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.first)


def read_pairs(path: str | Path) -> Pairs:
    """Read an STS-B style TSV: a header naming ``sentence1``, ``sentence2`` and ``score``.

    Fields are split on tabs with quoting off (STS-B holds raw ``"`` characters, which a
    quoting reader would take as field delimiters and silently merge lines).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise SraError(f"cannot read --data {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SraError(f"--data {path} is not UTF-8 text ({e.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise SraError(
            f"{path} has no {', '.join(missing)} column in its header (it has "
            f"{', '.join(header[:12]) or 'nothing'}); pass an STS-B style TSV"
        )
    i1, i2, iscore = (header.index(c) for c in REQUIRED)
    need = max(i1, i2, iscore)
    first, second, scores = [], [], []
    skipped = 0
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) <= need:
            skipped += 1
            continue
        try:
            score = float(row[iscore])
        except ValueError:
            skipped += 1
            continue
        if not math.isfinite(score):
            skipped += 1
            continue
        first.append(row[i1])
        second.append(row[i2])
        scores.append(score)
    if len(first) < 2:
        raise SraError(f"{path} has {len(first)} usable pairs; at least 2 are needed")
    notes = [f"{path}: skipped {skipped} malformed line(s)"] if skipped else []
    return Pairs(first, second, np.asarray(scores, dtype=np.float64), skipped, notes)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if denominator > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation: Pearson of average ranks (so ties are handled exactly)."""
    return pearson(average_ranks(x), average_ranks(y))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def teacher_vectors(cache_path: str | Path, texts: set[str], pooling: str) -> dict[str, np.ndarray]:
    """Vectors of the wanted sentences found in a cache, by exact text (one pass, flat memory)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cache import open_cache

    cache = open_cache(cache_path)
    if pooling not in cache.poolings:
        raise SraError(
            f"teacher cache {cache.path} has no {pooling!r} vectors (it has "
            f"{', '.join(cache.poolings) or 'none'}); pass --pooling"
        )
    wanted = pa.array(sorted(texts), type=pa.string())
    found: dict[str, np.ndarray] = {}
    for shard in range(len(cache.shards)):
        column = cache.read_shard(shard, ["text"]).column(0)
        hits = pc.is_in(column, value_set=wanted).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(hits)
        if not len(rows):
            continue
        vectors = cache.vectors(pooling, shard)
        for row, text in zip(rows.tolist(), column.take(rows).to_pylist(), strict=True):
            found.setdefault(text, np.array(vectors[row], dtype=np.float32))
    return found


def _scores(name: str, cos: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    return {
        "model": name,
        "pairs": len(gold),
        "spearman": spearman(cos, gold),
        "pearson": pearson(cos, gold),
    }


def evaluate_sts(
    student: str | Path,
    data: str | Path,
    *,
    teacher_cache: str | Path | None = None,
    pooling: str | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Score a student (and optionally the cached teacher) on an STS-style TSV.

    Returns ``{"data", "pairs", "rows": [{"model", "pairs", "spearman", "pearson"}, ...],
    "notes"}``; with a teacher cache also ``teacher_pairs_found``.
    """
    from student.encoder import StudentEncoder

    pairs = read_pairs(data)
    if np.ptp(pairs.scores) == 0:
        raise SraError(
            f"every gold score in {data} is {pairs.scores[0]:g}: the correlation is undefined "
            "(constant scores); pass pairs whose scores vary"
        )
    encoder = StudentEncoder.from_pretrained(student)
    unique = sorted(set(pairs.first) | set(pairs.second))
    index = {text: i for i, text in enumerate(unique)}
    vectors = encoder.encode(unique, batch_size=batch_size)
    a = vectors[[index[t] for t in pairs.first]]
    b = vectors[[index[t] for t in pairs.second]]
    student_cos = cosine_rows(a, b)
    result: dict[str, Any] = {
        "data": str(data),
        "student": str(student),
        "pairs": len(pairs),
        "skipped_lines": pairs.skipped,
        "rows": [_scores(f"student ({Path(student).name})", student_cos, pairs.scores)],
        "notes": list(pairs.notes),
    }
    if teacher_cache is None:
        return result

    # A student of several columns (`mean,mean_layer3`) is scored against the first: the
    # teacher's sentence vectors; the others only shaped its training.
    pooling = pooling or encoder.config.teacher_pooling.split(",")[0] or "mean"
    found = teacher_vectors(teacher_cache, set(unique), pooling)
    keep = np.array(
        [s1 in found and s2 in found for s1, s2 in zip(pairs.first, pairs.second, strict=True)]
    )
    n = int(keep.sum())
    result["teacher_pairs_found"] = n
    result["notes"].append(
        f"teacher: {n:,} of {len(pairs):,} pairs have both sentences in {teacher_cache}"
    )
    if n < 2:
        result["notes"].append(
            "teacher: too few pairs found to score; was the cache built "
            "from these sentences (pipeline embed --min-words 1)?"
        )
        return result
    t1 = np.stack([found[s] for s, k in zip(pairs.first, keep, strict=True) if k])
    t2 = np.stack([found[s] for s, k in zip(pairs.second, keep, strict=True) if k])
    gold = pairs.scores[keep]
    name = (encoder.config.teacher or "teacher").rstrip("/").split("/")[-1]
    result["rows"].append(_scores(f"teacher ({name}, {pooling})", cosine_rows(t1, t2), gold))
    if n < len(pairs):
        # The fair comparison: the student on exactly the pairs the teacher is scored on.
        result["rows"].append(_scores("student, same pairs", student_cos[keep], gold))
    return result
