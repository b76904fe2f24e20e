"""Task examples from a task cache, as the arrays fine-tuning batches are cut from.

Everything is read from the cache (``pipeline embed --corpus glue:TASK``): token ids and the
teacher's vectors per sentence id, and per split the labels and sentence ids of each example.
GLUE tasks are small enough (QQP, the largest, has ~540k distinct texts) to hold in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cache import Cache, CacheError
from cache.task_data import example_labels, read_examples, read_task
from student.training.data import check_target, target_dim, target_vectors


@dataclass
class Sentences:
    """Token ids and teacher vectors of every cached sentence, indexed by sentence id."""

    offsets: np.ndarray  # [n + 1] int64 into `tokens`
    tokens: np.ndarray  # int32, all sentences' ids back to back
    vectors: np.ndarray  # [n, dim] float32 teacher vectors (the chosen pooling)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, ids: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[len(ids), longest]`` int64 token ids padded with pad_id, and true lengths."""
        lengths = self.offsets[ids + 1] - self.offsets[ids]
        out = np.full((len(ids), max(int(lengths.max(initial=0)), 1)), pad_id, np.int64)
        for row, (i, n) in enumerate(zip(ids, lengths, strict=True)):
            out[row, :n] = self.tokens[self.offsets[i] : self.offsets[i] + n]
        return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64))


def load_sentences(cache: Cache, pooling: str) -> Sentences:
    """Every sentence's tokens and teacher vectors (``pooling``: a column, or a comma list of
    them side by side, as a student trained on them outputs)."""
    check_target(cache, pooling)
    n = cache.num_rows
    vectors = np.empty((n, target_dim(cache, pooling)), np.float32)
    lengths = np.zeros(n, np.int64)
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    for shard in range(len(cache.shards)):
        ids = cache.column_array(shard, "id").to_numpy()
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise CacheError(f"cache {cache.path} has sentence ids outside 0..{n - 1}")
        tokens = cache.column_array(shard, "input_ids")
        lengths[ids] = np.diff(tokens.offsets.to_numpy())
        vectors[ids] = target_vectors(cache, pooling, shard)
        pieces.append((ids, tokens.values.to_numpy()))
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.empty(int(offsets[-1]), np.int32)
    for ids, values in pieces:
        starts = np.repeat(offsets[ids], lengths[ids])
        within = np.arange(len(values)) - np.repeat(
            np.cumsum(lengths[ids]) - lengths[ids], lengths[ids]
        )
        flat[starts + within] = values
    return Sentences(offsets, flat, vectors)


@dataclass
class Examples:
    """One split: labels (class index, score, or multi-hot row; -1 / NaN / a row of -1 when
    withheld) and sentence ids."""

    idx: np.ndarray
    labels: np.ndarray
    first: np.ndarray
    second: np.ndarray | None  # None for single-sentence tasks

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def labelled(self) -> bool:
        labels = self.labels
        return bool(len(labels)) and not (
            np.isnan(labels).any() if labels.dtype.kind == "f" else (labels < 0).any()
        )


def concat(a: Examples, b: Examples) -> Examples:
    """The examples of ``a`` then ``b`` (a split and its augmented variants)."""
    second = None if a.second is None or b.second is None else np.concatenate([a.second, b.second])
    return Examples(
        np.concatenate([a.idx, b.idx]),
        np.concatenate([a.labels, b.labels]),
        np.concatenate([a.first, b.first]),
        second,
    )


def sentence_ids(ex: Examples) -> np.ndarray:
    """Every sentence id the examples use (with repeats)."""
    return ex.first if ex.second is None else np.concatenate([ex.first, ex.second])


def load_examples(cache: Cache, split: str, pair: bool) -> Examples:
    table = read_examples(cache, split)
    second = table.column("sentence2_id").to_numpy()
    return Examples(
        table.column("idx").to_numpy(),
        # [n] class indices or scores; [n, labels] multi-hot rows for a multi-label task
        example_labels(table, read_task(cache).task),
        table.column("sentence1_id").to_numpy(),
        second if pair else None,
    )


def example_batches(
    examples: Examples,
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None,
) -> Iterator[np.ndarray]:
    """Example indices in batches of similar length (little LSTM padding).

    With ``rng`` (training): shuffle, sort within pools of 50 batches by length, cut, and
    shuffle the batches. Without: sorted by length, for evaluation (callers restore order).
    """
    size = lengths[examples.first]
    if examples.second is not None:
        size = np.maximum(size, lengths[examples.second])
    return length_batches(size, batch_size, rng)


def length_batches(
    size: np.ndarray, batch_size: int, rng: np.random.Generator | None
) -> Iterator[np.ndarray]:
    """Indices of ``size`` (one length per item) batched as ``example_batches`` describes."""
    n = len(size)
    if rng is None:
        order = np.argsort(size, kind="stable")
        yield from (order[i : i + batch_size] for i in range(0, n, batch_size))
        return
    order = rng.permutation(n)
    pool = batch_size * 50
    batches = []
    for start in range(0, n, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(size[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    for b in rng.permutation(len(batches)):
        yield batches[b]


def load_texts(cache: Cache, ids: np.ndarray) -> list[str]:
    """The cached texts of sentence ``ids``, in that order (for timing a model on real input)."""
    wanted = np.unique(ids)
    found: dict[int, str] = {}
    for shard in range(len(cache.shards)):
        shard_ids = cache.column_array(shard, "id").to_numpy()
        rows = np.flatnonzero(np.isin(shard_ids, wanted))
        if len(rows):
            texts = cache.column_array(shard, "text").take(rows).to_pylist()
            found.update(zip(shard_ids[rows].tolist(), texts, strict=True))
    return [found[int(i)] for i in ids]
