"""Training batches straight from a stage-one cache: token ids in, teacher vectors as targets.

Only the cache is read, shard by shard through memory maps, so memory stays flat however big
the cache is. One epoch, for one process:

1. The shards are shuffled (seed + epoch), laid end to end and cut into equal row ranges, one
   per *stream*. A stream is what one DataLoader worker of one rank reads (``world_size *
   max(1, workers)`` streams in all), so ranks and workers read disjoint rows and get about
   the same number of them, even when there are fewer shards than streams.
2. A stream walks its rows in groups of about ``shuffle_buffer`` rows (a bounded shuffle
   buffer: only row references are held). A group is shuffled, sorted by token length and cut
   into batches by a token budget, preferring batches whose rows all have the same length (no
   padding, and the LSTM's fast unpacked path), then the batches are shuffled.
3. Rows held out for validation (``validation.compute_split``: their ``id`` hashes below a
   threshold, wherever they sit) are skipped.

Everything is a pure function of (seed, epoch, stream layout), so a resumed run can skip to
its exact position: ``set_epoch(epoch, DataPosition)`` skips batches without building them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cache import Cache, CacheError
from cache.errors import SraError
from student.training.config import DataConfig

if TYPE_CHECKING:
    from student.training.dist import Dist
    from student.training.validation import Split

# A run of equal-length rows shorter than a full batch still gets its own (padding-free) batch
# when it holds at least this share of a full batch; smaller runs join mixed-length batches.
UNIFORM_SHARE = 0.1

REF_SHIFT = 32  # a row reference packs (shard, row) into one int64: shard << 32 | row


def plan_batches(
    lengths: np.ndarray, token_budget: int, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Cut rows into batches: indices into ``lengths``, in a shuffled batch order.

    Rows are sorted by length (stably, so the incoming order breaks ties). Each run of equal
    length gives full batches of ``min(batch_size, token_budget // length)`` rows, and a
    leftover of at least ``UNIFORM_SHARE`` of that is a batch of its own: batches without
    padding are about twice as fast in the LSTM. Smaller leftovers are pooled, in length
    order, into mixed batches whose padded size (rows * longest) stays within the budget.
    """
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    runs = np.split(order, np.flatnonzero(np.diff(sorted_lengths)) + 1)
    batches: list[np.ndarray] = []
    pool: list[int] = []
    for run in runs:
        if not len(run):
            continue
        length = max(1, int(lengths[run[0]]))
        cap = max(1, min(batch_size, token_budget // length))
        full = len(run) // cap * cap
        batches.extend(run[i : i + cap] for i in range(0, full, cap))
        rest = run[full:]
        if len(rest) and len(rest) >= UNIFORM_SHARE * cap:
            batches.append(rest)
            continue
        for index in rest.tolist():
            # Rows arrive in ascending length, so this row is the batch's longest.
            if pool and ((len(pool) + 1) * length > token_budget or len(pool) >= batch_size):
                batches.append(np.array(pool, dtype=np.int64))
                pool = []
            pool.append(index)
    if pool:
        batches.append(np.array(pool, dtype=np.int64))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


@dataclass
class Batch:
    """One training batch: padded ids, true lengths, teacher vectors, and where it came from."""

    input_ids: torch.Tensor  # [B, L] int64, L = longest row
    lengths: torch.Tensor  # [B] int64
    targets: torch.Tensor  # [B, dim] float32
    stream: int = 0  # the stream (worker) of this rank that produced it
    index: int = 0  # its position in that stream this epoch

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def to(self, device: torch.device) -> Batch:
        nb = device.type == "cuda"
        return Batch(
            self.input_ids.to(device, non_blocking=nb),
            self.lengths,  # the model wants lengths on the CPU anyway
            self.targets.to(device, non_blocking=nb),
            self.stream,
            self.index,
        )


@dataclass
class DataPosition:
    """How far a rank got into an epoch: batches taken from each stream, and whose turn is
    next (the DataLoader takes batches from its workers round-robin)."""

    consumed: list[int] = field(default_factory=list)
    next_stream: int = 0

    def advance(self, batch: Batch, streams: int) -> None:
        if len(self.consumed) < streams:
            self.consumed += [0] * (streams - len(self.consumed))
        self.consumed[batch.stream] = batch.index + 1
        self.next_stream = (batch.stream + 1) % streams


class ShardRows:
    """Zero-copy numpy views of the columns training needs, for a few recently used shards."""

    def __init__(self, cache: Cache, pooling: str, keep: int = 8) -> None:
        self.cache = cache
        self.pooling = pooling
        self.keep = keep
        self._open: OrderedDict[int, tuple[np.ndarray, ...]] = OrderedDict()

    def get(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, token values, n_tokens, vectors) of one shard."""
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]  # type: ignore[return-value]
        ids = self.cache.column_array(shard, "input_ids")
        offsets = ids.offsets.to_numpy()
        values = ids.values.to_numpy()
        n_tokens = np.diff(offsets).astype(np.int64)
        entry = (offsets, values, n_tokens, target_vectors(self.cache, self.pooling, shard))
        self._open[shard] = entry
        while len(self._open) > self.keep:
            self._open.popitem(last=False)
        return entry

    def lengths(self, shard: int) -> np.ndarray:
        return self.get(shard)[2]

    def batch(self, refs: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded ids [B, L], lengths [B], targets [B, dim] for packed row references."""
        shards = refs >> REF_SHIFT
        rows = refs & ((1 << REF_SHIFT) - 1)
        lengths = np.empty(len(refs), dtype=np.int64)
        starts = np.empty(len(refs), dtype=np.int64)
        targets: np.ndarray | None = None
        values_by_shard: dict[int, np.ndarray] = {}
        for shard in np.unique(shards).tolist():
            sel = shards == shard
            offsets, values, _, vectors = self.get(shard)
            r = rows[sel]
            starts[sel] = offsets[r]
            lengths[sel] = offsets[r + 1] - offsets[r]
            if targets is None:
                targets = np.empty((len(refs), vectors.shape[1]), dtype=np.float32)
            targets[sel] = vectors[r]
            values_by_shard[shard] = values
        assert targets is not None
        width = max(1, int(lengths.max()))
        positions = starts[:, None] + np.arange(width)[None, :]
        valid = np.arange(width)[None, :] < lengths[:, None]
        ids = np.full((len(refs), width), pad_id, dtype=np.int64)
        for shard, values in values_by_shard.items():
            sel = (shards == shard)[:, None] & valid
            ids[sel] = values[positions[sel]]
        return ids, lengths, targets


def _split_range(start: int, stop: int, parts: int, index: int) -> tuple[int, int]:
    size = stop - start
    return start + size * index // parts, start + size * (index + 1) // parts


class TrainData(IterableDataset):
    """The training rows of one rank as an iterable of ``Batch``; use with a DataLoader with
    ``batch_size=None`` (batches are already formed) and ``cfg.workers`` worker processes
    (``epoch_batches`` does).

    Call ``set_epoch`` before iterating. With workers, the DataLoader interleaves its workers'
    batches round-robin starting at worker 0; ``set_epoch(epoch, position)`` rotates which
    stream each worker reads so that a resumed run continues that interleaving exactly.
    """

    def __init__(
        self,
        cache: Cache,
        cfg: DataConfig,
        split: Split,
        *,
        pad_id: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.cache = cache
        self.cfg = cfg
        self.split = split
        self.pad_id = pad_id
        self.rank = rank
        self.world_size = world_size
        self.streams = max(1, cfg.workers)
        self.epoch = 0
        self.position = DataPosition([0] * self.streams, 0)
        self._rows: ShardRows | None = None

    @property
    def rows(self) -> ShardRows:
        # Opened lazily, so each DataLoader worker maps the shards itself.
        if self._rows is None:
            self._rows = ShardRows(self.cache, self.cfg.pooling)
        return self._rows

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_rows": None}

    def set_epoch(self, epoch: int, position: DataPosition | None = None) -> None:
        self.epoch = epoch
        position = position or DataPosition()
        consumed = list(position.consumed) + [0] * (self.streams - len(position.consumed))
        self.position = DataPosition(consumed[: self.streams], position.next_stream % self.streams)

    # -- the plan: which rows, in which batches, for one stream ----------------------------

    def _stream_ranges(self, stream: int) -> list[tuple[int, int, int]]:
        """(shard, start, stop) row ranges of one stream of this rank, this epoch."""
        seed = int(np.random.SeedSequence([self.cfg.seed, self.epoch]).generate_state(1)[0])
        order = self.cache.shard_order(shuffle=True, seed=seed)
        sizes = [self.cache.shards[i].rows for i in order]
        ends = np.cumsum([0, *sizes])
        # Equal row ranges of the shuffled shards laid end to end: first split among ranks,
        # then among this rank's streams, so a rank's rows do not depend on its worker count.
        lo, hi = _split_range(0, int(ends[-1]), self.world_size, self.rank)
        lo, hi = _split_range(lo, hi, self.streams, stream)
        ranges = []
        for shard, first, last in zip(order, ends[:-1], ends[1:], strict=True):
            a, b = max(lo, int(first)), min(hi, int(last))
            if a < b:
                ranges.append((shard, a - int(first), b - int(first)))
        return ranges

    def _groups(self, stream: int) -> Iterator[np.ndarray]:
        """Packed references to the training rows of a stream, one shuffle buffer at a time."""
        pending: list[np.ndarray] = []
        size = 0
        for shard, start, stop in self._stream_ranges(stream):
            ids = self.cache.read_shard(shard, ["id"]).column(0).to_numpy()[start:stop]
            rows = np.arange(start, stop, dtype=np.int64)[~self.split.held_out_mask(ids)]
            pending.append((np.int64(shard) << REF_SHIFT) | rows)
            size += len(rows)
            if size >= self.cfg.shuffle_buffer:
                yield np.concatenate(pending)
                pending, size = [], 0
        if size:
            yield np.concatenate(pending)

    def plan(self, stream: int) -> Iterator[np.ndarray]:
        """The batches (packed row references) of one stream this epoch, in order."""
        for g, refs in enumerate(self._groups(stream)):
            rng = np.random.default_rng([self.cfg.seed, self.epoch, self.rank, stream, g])
            refs = refs[rng.permutation(len(refs))]
            shards = refs >> REF_SHIFT
            lengths = np.empty(len(refs), dtype=np.int64)
            in_group = np.unique(shards).tolist()
            # Keep every shard of the group mapped: its batches draw rows from all of them.
            self.rows.keep = max(self.rows.keep, len(in_group) + 1)
            for shard in in_group:
                sel = shards == shard
                lengths[sel] = self.rows.lengths(shard)[refs[sel] & ((1 << REF_SHIFT) - 1)]
            for batch in plan_batches(lengths, self.cfg.token_budget, self.cfg.batch_size, rng):
                yield refs[batch]

    def num_batches(self) -> int:
        """Batches this rank yields this epoch (plans only; nothing is gathered)."""
        return sum(sum(1 for _ in self.plan(s)) for s in range(self.streams))

    # -- iteration --------------------------------------------------------------------------

    def _stream_batches(self, stream: int) -> Iterator[Batch]:
        skip = self.position.consumed[stream]
        for index, refs in enumerate(self.plan(stream)):
            if index < skip:
                continue
            ids, lengths, targets = self.rows.batch(refs, self.pad_id)
            yield Batch(
                torch.from_numpy(ids),
                torch.from_numpy(lengths),
                torch.from_numpy(targets),
                stream,
                index,
            )

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        if info is not None:
            if info.num_workers != self.streams:
                raise RuntimeError(
                    f"TrainData was built for {self.streams} workers, DataLoader has "
                    f"{info.num_workers}"
                )
            # Rotate so DataLoader's round-robin (which starts at worker 0) resumes with the
            # stream whose turn it was.
            yield from self._stream_batches((info.id + self.position.next_stream) % self.streams)
            return
        # In-process: the round-robin over streams that DataLoader does over its workers.
        order = [(self.position.next_stream + i) % self.streams for i in range(self.streams)]
        live = {s: self._stream_batches(s) for s in order}
        while live:
            for stream in list(live):
                batch = next(live[stream], None)
                if batch is None:
                    del live[stream]
                else:
                    yield batch


def epoch_batches(data: TrainData, epoch: int) -> Iterator[Batch]:
    """One epoch of ``data`` (``set_epoch`` first): in-process, or from its DataLoader workers."""
    if data.cfg.workers == 0:
        return iter(data)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        num_workers=data.cfg.workers,
        # Its own generator: DataLoader otherwise draws worker seeds from the global RNG,
        # which would shift the dropout masks of a resumed run.
        generator=torch.Generator().manual_seed(data.cfg.seed * 1_000_003 + epoch),
        prefetch_factor=4,
    )
    return iter(loader)


class StepCounter:
    """Steps per epoch: the rank with the fewest batches sets it, so DDP ranks stay in step."""

    def __init__(self, data: TrainData, dist: Dist) -> None:
        self.data = data
        self.dist = dist
        self._counts: dict[int, int] = {}

    def __call__(self, epoch: int) -> int:
        if epoch not in self._counts:
            self.data.set_epoch(epoch)
            self._counts[epoch] = int(self.dist.min(self.data.num_batches()))
        return self._counts[epoch]

    def total(self, epochs: int | None, max_steps: int | None) -> int:
        """All the run's steps: ``epochs`` passes (1 by default), capped by ``max_steps``; or,
        with only ``max_steps``, as many passes as it needs."""
        if epochs is None and max_steps is not None:
            return max_steps
        total = sum(self(e) for e in range(epochs or 1))
        if total < 1:
            raise SraError("the cache gives no training batches; use a larger cache")
        return min(total, max_steps) if max_steps is not None else total


def target_columns(pooling: str) -> list[str]:
    """The cache columns a target names: ``mean``, or ``mean,mean_layer3`` side by side."""
    return [p.strip() for p in pooling.split(",") if p.strip()]


def target_vectors(cache: Cache, pooling: str, shard: int) -> np.ndarray:
    """The `[rows, dim x columns]` targets of one shard; one column stays a zero-copy view."""
    columns = target_columns(pooling)
    if len(columns) == 1:
        return cache.vectors(columns[0], shard)
    return np.concatenate([cache.vectors(c, shard) for c in columns], axis=1)


def target_dim(cache: Cache, pooling: str) -> int:
    return cache.dim * len(target_columns(pooling))


def check_target(cache: Cache, pooling: str) -> None:
    """Refuse, in one line, a target naming a column the cache lacks, or one twice."""
    columns = target_columns(pooling)
    for column in columns or [pooling]:
        if column not in cache.poolings or column not in cache.columns:
            raise CacheError(
                f"cache {cache.path} has no {column!r} vectors (it has "
                f"{', '.join(cache.poolings) or 'none'}); pass --pooling "
                f"{(cache.poolings or ['mean'])[0]} or re-run `pipeline embed --pooling {column}`"
            )
    if len(set(columns)) != len(columns):
        raise CacheError(f"--pooling {pooling} names a column twice; name each once")


def check_trainable(cache: Cache, pooling: str) -> None:
    """Refuse, in one line, a cache that cannot train a student with this pooling."""
    if "input_ids" not in cache.columns:
        raise CacheError(
            f"cache {cache.path} has no input_ids column, which stage two trains on; "
            "re-create it with `pipeline embed`"
        )
    check_target(cache, pooling)
    if cache.num_rows < 2:
        raise CacheError(f"cache {cache.path} holds {cache.num_rows} rows; it needs at least 2")
    if cache.dim < 1:
        raise CacheError(f"cache {cache.path} does not say its vector size; it is damaged")
