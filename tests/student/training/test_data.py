"""Training data from a cache: held-out split, token-budget batches, coverage, order, resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from cache import open_cache
from student.training.config import DataConfig
from student.training.data import DataPosition, ShardRows, TrainData, plan_batches
from student.training.validation import compute_split, id_hash, validation_batches
from tests.conftest import make_cache

# 3 DataLoader workers on a 2-core machine warn; uneven worker counts are the point here.
pytestmark = pytest.mark.filterwarnings("ignore:.*worker processes in total:UserWarning")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_cache(tmp_path_factory.mktemp("data"), tiny_bert)


def all_ids(cache_path: Path) -> np.ndarray:
    c = open_cache(cache_path)
    return np.concatenate(
        [c.read_shard(i, ["id"]).column(0).to_numpy() for i in range(len(c.shards))]
    )


def ids_of(cache_path: Path) -> dict[tuple[int, ...], int]:
    """input_ids (as a tuple) -> id, to map batch rows back to cache rows."""
    c = open_cache(cache_path)
    out = {}
    for i in range(len(c.shards)):
        t = c.read_shard(i, ["id", "input_ids"])
        for row_id, ids in zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True):
            out[tuple(ids)] = row_id
    return out


def batch_ids(batch, lookup) -> list[int]:
    rows = []
    for ids, n in zip(batch.input_ids.tolist(), batch.lengths.tolist(), strict=True):
        rows.append(lookup[tuple(ids[:n])])
    return rows


# ------------------------------------------------------------------------------- split


def test_split_is_deterministic_and_independent_of_shard_layout(tmp_path, cache_dir, tiny_bert):
    other = make_cache(tmp_path, tiny_bert, shard_rows=40)  # same rows, 7 shards instead of 3
    assert len(open_cache(other).shards) != len(open_cache(cache_dir).shards)
    cfg = DataConfig(val_fraction=0.05, val_min_rows=3)
    held = {}
    for path in (cache_dir, other):
        split = compute_split(open_cache(path), cfg)
        ids = all_ids(path)
        held[path] = set(ids[split.held_out_mask(ids)].tolist())
        assert split.held_out == len(held[path]) and split.total == 400
        assert split == compute_split(open_cache(path), cfg)  # deterministic
    assert held[cache_dir] == held[other]
    # ~5%, spread out: Fibonacci hashing of consecutive ids.
    assert 15 <= len(held[cache_dir]) <= 25
    expected = {i for i in range(400) if (i * 0x9E3779B97F4A7C15) % 2**64 < 0.05 * 2**64}
    assert held[cache_dir] == expected


def test_split_minimum_and_eval_cap(cache_dir):
    c = open_cache(cache_dir)
    tiny = compute_split(c, DataConfig(val_fraction=0.0001, val_min_rows=6))
    assert tiny.held_out == 6  # raised to the minimum, exactly
    capped = compute_split(c, DataConfig(val_fraction=0.2, val_max_rows=10))
    assert capped.evaluated == 10 and capped.held_out > 60
    ids = all_ids(cache_dir)
    # The evaluated rows are a subset of the held-out rows.
    assert not (capped.eval_mask(ids) & ~capped.held_out_mask(ids)).any()
    none = compute_split(c, DataConfig(val_fraction=0.0))
    assert none.held_out == 0 and validation_batches(c, DataConfig(val_fraction=0.0), none) == []


def test_id_hash_wraps_mod_2_64():
    ids = np.array([0, 1, 2**40], dtype=np.int64)
    expected = [(int(i) * 0x9E3779B97F4A7C15) % 2**64 for i in ids]
    assert id_hash(ids).tolist() == expected


# ----------------------------------------------------------------------------- batches


def test_plan_batches_budget_and_equal_lengths():
    rng = np.random.default_rng(0)
    lengths = np.array([10] * 50 + [11] * 3 + [12] * 2 + [40] * 9 + [7])
    batches = plan_batches(lengths, token_budget=200, batch_size=16, rng=rng)
    flat = np.sort(np.concatenate(batches))
    assert flat.tolist() == list(range(len(lengths)))  # every row exactly once
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or len(b) * lengths[b].max() <= 200)
    uniform = [b for b in batches if len(set(lengths[b].tolist())) == 1]
    # The 50 rows of length 10 go in 16+16+16 equal-length batches, the 2 left over are pooled.
    assert sorted(len(b) for b in uniform if lengths[b[0]] == 10)[-3:] == [16, 16, 16]
    # A row longer than the budget still gets a batch of its own.
    assert [len(b) for b in plan_batches(np.array([300]), 200, 16, rng)] == [1]


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (1, 3), (2, 2)])
def test_every_training_row_once_per_epoch_within_budget(cache_dir, world, workers):
    c = open_cache(cache_dir)
    cfg = DataConfig(token_budget=300, batch_size=16, shuffle_buffer=120, val_fraction=0.05)
    split = compute_split(c, cfg)
    lookup = ids_of(cache_dir)
    seen: list[int] = []
    for rank in range(world):
        data = TrainData(c, replace(cfg, workers=workers), split, rank=rank, world_size=world)
        data.set_epoch(1)
        batches = list(data) if workers == 0 else list(_loader(data, workers))
        assert len(batches) == data.num_batches()
        for b in batches:
            width = b.input_ids.shape[1]
            assert width == int(b.lengths.max())
            assert len(b) <= 16 and (len(b) == 1 or len(b) * width <= 300)
            # Padding is pad_id (0) and never inside a row.
            mask = torch.arange(width)[None, :] >= b.lengths[:, None]
            assert (b.input_ids[mask] == 0).all()
            assert b.targets.shape == (len(b), 32) and b.targets.dtype == torch.float32
        seen += [i for b in batches for i in batch_ids(b, lookup)]
    ids = all_ids(cache_dir)
    train_ids = sorted(ids[~split.held_out_mask(ids)].tolist())
    assert sorted(seen) == train_ids  # each once, across ranks and workers; none held out


def test_batch_targets_are_the_cache_vectors(cache_dir):
    c = open_cache(cache_dir)
    cfg = DataConfig(val_fraction=0.0)
    data = TrainData(c, cfg, compute_split(c, cfg))
    data.set_epoch(0)
    batch = next(iter(data))
    vectors = {}
    for i in range(len(c.shards)):
        t = c.read_shard(i, ["input_ids"])
        for row, ids in enumerate(t.column(0).to_pylist()):
            vectors[tuple(ids)] = c.vectors("mean", i)[row]
    for ids, n, target in zip(batch.input_ids.tolist(), batch.lengths, batch.targets, strict=True):
        np.testing.assert_array_equal(target.numpy(), vectors[tuple(ids[:n])])


def test_shard_rows_are_views_of_the_mapped_shards(cache_dir):
    # A copy per shard (e.g. combine_chunks) made training memory grow with the cache size.
    c = open_cache(cache_dir)
    rows = ShardRows(c, "mean")
    before = pa.total_allocated_bytes()
    for shard in range(len(c.shards)):
        rows.get(shard)
    assert pa.total_allocated_bytes() == before


def test_batch_order_is_deterministic_per_seed_and_epoch(cache_dir):
    c = open_cache(cache_dir)

    def order(seed: int, epoch: int) -> list[list[int]]:
        cfg = DataConfig(token_budget=200, batch_size=8, seed=seed)
        data = TrainData(c, cfg, compute_split(c, cfg))
        data.set_epoch(epoch)
        return [b.input_ids[:, 1].tolist() for b in data]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)


def _loader(data: TrainData, workers: int):
    return torch.utils.data.DataLoader(
        data, batch_size=None, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize(("workers", "stop"), [(0, 7), (2, 5), (2, 6), (3, 10)])
def test_resume_position_continues_the_exact_batch_sequence(cache_dir, workers, stop):
    c = open_cache(cache_dir)
    # Uneven streams (3 shards of 192/192/16 rows) exercise exhausted workers.
    cfg = DataConfig(token_budget=200, batch_size=8, shuffle_buffer=100)
    split = compute_split(c, cfg)
    data = TrainData(c, replace(cfg, workers=workers), split)
    data.set_epoch(2)
    full = list(data) if workers == 0 else list(_loader(data, workers))
    position = DataPosition([0] * data.streams)
    for b in full[:stop]:
        position.advance(b, data.streams)
    resumed = TrainData(c, replace(cfg, workers=workers), split)
    resumed.set_epoch(2, position)
    rest = list(resumed) if workers == 0 else list(_loader(resumed, workers))
    key = [(b.stream, b.index) for b in full[stop:]]
    assert [(b.stream, b.index) for b in rest] == key
    for a, b in zip(full[stop:], rest, strict=True):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.targets, b.targets)


def test_validation_batches_are_the_evaluated_rows(cache_dir):
    c = open_cache(cache_dir)
    cfg = DataConfig(val_fraction=0.05, val_max_rows=12, token_budget=100)
    split = compute_split(c, cfg)
    batches = validation_batches(c, cfg, split)
    lookup = ids_of(cache_dir)
    got = sorted(i for b in batches for i in batch_ids(b, lookup))
    ids = all_ids(cache_dir)
    assert got == sorted(ids[split.eval_mask(ids)].tolist()) and len(got) == 12
