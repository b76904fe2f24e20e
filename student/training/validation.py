"""Held-out fidelity to the teacher: which rows training never sees, and how close the
student's vectors come to the teacher's on them.

``compute_split`` holds rows out by a hash of their id, so the held-out set does not depend
on shards, processes or workers. ``HeldOut`` measures MSE and mean cosine on them, like
sentence-transformers' ``MSEEvaluator``: built once from the held-out batches, called whenever
the loop validates. Ranks split the batches and add up their sums, so the numbers are those of
one process over all the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cache import Cache
from student.model import BiLSTMEncoder
from student.training.config import DataConfig
from student.training.data import REF_SHIFT, Batch, ShardRows, plan_batches
from student.training.dist import Dist

# Fibonacci hashing: id * 2**64/phi mod 2**64 spreads consecutive ids evenly over [0, 2**64),
# so "hash below a threshold" picks an even, layout-independent sprinkle of rows.
HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
HASH_SPACE = 1 << 64


def id_hash(ids: np.ndarray) -> np.ndarray:
    """The split hash of each id (uint64; multiplication wraps mod 2**64)."""
    return np.asarray(ids).astype(np.uint64) * HASH_MULTIPLIER


@dataclass(frozen=True)
class Split:
    """Held-out rows are those with ``id_hash(id) < threshold``; validation measures the
    (smaller or equal) set below ``eval_threshold``. Both depend only on the set of ids."""

    threshold: int
    eval_threshold: int
    held_out: int  # rows below threshold
    evaluated: int  # rows below eval_threshold
    total: int

    @property
    def train_rows(self) -> int:
        return self.total - self.held_out

    def held_out_mask(self, ids: np.ndarray) -> np.ndarray:
        return id_hash(ids) < np.uint64(min(self.threshold, HASH_SPACE - 1))

    def eval_mask(self, ids: np.ndarray) -> np.ndarray:
        return id_hash(ids) < np.uint64(min(self.eval_threshold, HASH_SPACE - 1))


def compute_split(cache: Cache, cfg: DataConfig) -> Split:
    """Scan the ``id`` column once (a few bytes a row) to fix the held-out thresholds.

    The threshold is ``val_fraction`` of the hash space, raised if needed so at least
    ``val_min_rows`` rows are held out; validation uses the ``val_max_rows`` smallest hashes of
    those. Reading every shard here also surfaces a missing or truncated shard before training.
    """
    total = cache.num_rows
    if cfg.val_fraction == 0:
        return Split(0, 0, 0, 0, total)
    k = max(cfg.val_min_rows, cfg.val_max_rows)
    smallest = np.empty(0, dtype=np.uint64)
    for shard in range(len(cache.shards)):
        h = id_hash(cache.read_shard(shard, ["id"]).column(0).to_numpy())
        if len(h) > k:
            h = np.partition(h, k - 1)[:k]
        smallest = np.sort(np.concatenate([smallest, h]))[:k]
    threshold = int(cfg.val_fraction * HASH_SPACE)
    # Never hold out more than half the cache, however small it is.
    min_rows = min(cfg.val_min_rows, total // 2)
    if min_rows and len(smallest) >= min_rows:
        threshold = max(threshold, int(smallest[min_rows - 1]) + 1)
    eval_threshold = threshold
    if len(smallest) >= cfg.val_max_rows:
        eval_threshold = min(threshold, int(smallest[cfg.val_max_rows - 1]) + 1)
    held_out = evaluated = 0
    split = Split(threshold, eval_threshold, 0, 0, total)
    for shard in range(len(cache.shards)):
        ids = cache.read_shard(shard, ["id"]).column(0).to_numpy()
        held_out += int(split.held_out_mask(ids).sum())
        evaluated += int(split.eval_mask(ids).sum())
    return Split(threshold, eval_threshold, held_out, evaluated, total)


def validation_batches(cache: Cache, cfg: DataConfig, split: Split, pad_id: int = 0) -> list[Batch]:
    """The evaluated held-out rows, length-sorted into batches, built once (bounded by
    ``val_max_rows``)."""
    if split.evaluated == 0:
        return []
    refs = []
    for shard in range(len(cache.shards)):
        ids = cache.read_shard(shard, ["id"]).column(0).to_numpy()
        rows = np.flatnonzero(split.eval_mask(ids)).astype(np.int64)
        refs.append((np.int64(shard) << REF_SHIFT) | rows)
    all_refs = np.concatenate(refs)
    rows_reader = ShardRows(cache, cfg.pooling)
    lengths = np.empty(len(all_refs), dtype=np.int64)
    shards = all_refs >> REF_SHIFT
    for shard in np.unique(shards).tolist():
        sel = shards == shard
        lengths[sel] = rows_reader.lengths(shard)[all_refs[sel] & ((1 << REF_SHIFT) - 1)]
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    out = []
    for batch in plan_batches(lengths, cfg.token_budget, cfg.batch_size, rng):
        ids, lens, targets = rows_reader.batch(all_refs[batch], pad_id)
        out.append(Batch(torch.from_numpy(ids), torch.from_numpy(lens), torch.from_numpy(targets)))
    return out


class HeldOut:
    """``held_out(model)`` -> ``{"val_mse", "val_cos", "val_rows"}`` (empty without rows)."""

    def __init__(
        self,
        batches: list[Batch],
        dist: Dist,
        *,
        targets: Callable[[torch.Tensor], torch.Tensor],
        autocast: AbstractContextManager[Any],
    ) -> None:
        self.batches = batches
        self.dist = dist
        self.targets = targets  # what the vectors are compared to (unit length, or as cached)
        self.autocast = autocast

    def __len__(self) -> int:
        return len(self.batches)

    @torch.no_grad()
    def __call__(self, model: BiLSTMEncoder) -> dict[str, float]:
        dist = self.dist
        model.eval()
        sse = cos = rows = 0.0
        try:
            for batch in self.batches[dist.rank :: dist.world]:
                b = batch.to(dist.device)
                targets = self.targets(b.targets)
                with self.autocast:
                    pred = model(b.input_ids, b.lengths)
                pred = pred.float()
                sse += float(((pred - targets) ** 2).mean(dim=-1).sum())
                cos += float(F.cosine_similarity(pred, targets, dim=-1).sum())
                rows += len(batch)
        finally:
            model.train()
        sse, cos, rows = dist.sum([sse, cos, rows])
        if not rows:
            return {}
        return {"val_mse": sse / rows, "val_cos": cos / rows, "val_rows": int(rows)}
