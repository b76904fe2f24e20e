"""Reading a cache: memory-mapped shards, zero-copy vectors, and a DuckDB view of it all.

Shards are Arrow IPC files, uncompressed, one record batch each, so a vector column of a
shard is one contiguous float32 buffer that numpy can view without copying.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from cache.errors import CacheError
from cache.files import sha256_file
from cache.manifest import (
    EMBEDDINGS_NAME,
    MANIFEST_NAME,
    TOKENIZER_NAME,
    Manifest,
    ShardInfo,
    read_manifest,
)

if TYPE_CHECKING:
    import duckdb

# Stage one writes the damaged shards again, and only those, with the same ids and rows.
REPAIR_HINT = "rerun the `pipeline embed` command that made the cache, with --repair"


class Cache:
    """An opened cache directory. Use `open_cache(path)` to get one."""

    def __init__(self, path: Path, manifest: Manifest, checksums: bool = True) -> None:
        self.path = path
        self.manifest = manifest
        # A full sha256 of each shard the first time it is opened (~1 s per GB) is what lets
        # every reader name a corrupt shard instead of training on flipped bits.
        self.checksums = checksums
        self._checked: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"Cache({str(self.path)!r}, rows={self.num_rows}, shards={len(self.shards)}, "
            f"poolings={self.poolings}, status={self.manifest.status!r})"
        )

    @property
    def num_rows(self) -> int:
        return self.manifest.num_rows

    def __len__(self) -> int:
        return self.num_rows

    @property
    def shards(self) -> list[ShardInfo]:
        return self.manifest.shards

    @property
    def poolings(self) -> list[str]:
        return self.manifest.poolings

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def columns(self) -> list[str]:
        return list(self.manifest.schema)

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_NAME

    @property
    def embeddings_path(self) -> Path:
        return self.path / EMBEDDINGS_NAME

    # -- shards -------------------------------------------------------------------------

    def shard_path(self, shard: ShardInfo | int) -> Path:
        info = self.shards[shard] if isinstance(shard, int) else shard
        return self.path / info.file

    def read_shard(self, shard: ShardInfo | int, columns: Sequence[str] | None = None) -> pa.Table:
        """One shard as a memory-mapped table (nothing is read until a column is touched)."""
        info = self.shards[shard] if isinstance(shard, int) else shard
        path = self.path / info.file
        self._check_shard(info, path)
        try:
            source = pa.memory_map(str(path), "r")
            reader = pa.ipc.open_file(source)
            table = reader.read_all()
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise CacheError(f"shard {path} is corrupt ({_first_line(e)}); {REPAIR_HINT}") from None
        if table.num_rows != info.rows:
            raise CacheError(
                f"shard {path} holds {table.num_rows} rows, the manifest says {info.rows}; "
                f"{REPAIR_HINT}"
            )
        if columns is not None:
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise CacheError(
                    f"cache {self.path} has no column {', '.join(missing)} "
                    f"(it has {', '.join(table.column_names)})"
                )
            table = table.select(list(columns))
        return table

    def _check_shard(self, info: ShardInfo, path: Path) -> None:
        if info.file in self._checked:
            return
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CacheError(
                f"shard {path} is listed in the manifest but missing; {REPAIR_HINT}"
            ) from None
        if size != info.bytes:
            raise CacheError(
                f"shard {path} is {size} bytes, the manifest says {info.bytes} (truncated or "
                f"replaced); {REPAIR_HINT}"
            )
        if self.checksums and sha256_file(path) != info.sha256:
            raise CacheError(f"shard {path} fails its sha256 check (corrupt); {REPAIR_HINT}")
        self._checked.add(info.file)

    def shard_order(
        self, *, shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> list[int]:
        """Shard indices for one reader: optionally shuffled, then dealt out by rank."""
        order = list(range(len(self.shards)))
        if shuffle:
            random.Random(seed).shuffle(order)
        return order[rank::world_size]

    def iter_batches(
        self,
        columns: Sequence[str] | None = None,
        *,
        batch_size: int | None = None,
        shuffle_shards: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of the chosen columns, shard by shard (zero-copy slices)."""
        for i in self.shard_order(
            shuffle=shuffle_shards, seed=seed, rank=rank, world_size=world_size
        ):
            table = self.read_shard(i, columns)
            for batch in table.to_batches():
                if batch_size is None:
                    yield batch
                else:
                    for start in range(0, batch.num_rows, batch_size):
                        yield batch.slice(start, batch_size)

    def column_array(self, shard: ShardInfo | int, name: str) -> pa.Array:
        """One column of one shard as a single array: a view of the mapped file when the shard
        holds one record batch (stage one writes one), a concatenated copy otherwise.

        ``ChunkedArray.combine_chunks`` would copy even a single chunk; done for every shard,
        that copy made training memory grow with the size of the cache.
        """
        column = self.read_shard(shard, [name]).column(0)
        return column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)

    def vectors(self, pooling: str, shard: ShardInfo | int) -> np.ndarray:
        """The `[rows, dim]` float32 vectors of one shard, a read-only view of the mapped file."""
        if pooling not in self.columns:
            raise CacheError(
                f"cache {self.path} has no {pooling!r} vectors (it has "
                f"{', '.join(self.poolings) or 'none'}); "
                f"re-run `pipeline embed --pooling {pooling}`"
            )
        arr = self.column_array(shard, pooling)
        dim = arr.type.list_size
        flat = arr.values.to_numpy(zero_copy_only=True)
        offset = arr.offset * dim
        return flat[offset : offset + len(arr) * dim].reshape(len(arr), dim)

    # -- SQL ----------------------------------------------------------------------------

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with read-only views `sentences` and `shards`."""
        import duckdb
        import pyarrow.dataset as ds

        con = duckdb.connect(":memory:")
        files = [str(self.shard_path(s)) for s in self.shards]
        for s in self.shards:
            self._check_shard(s, self.shard_path(s))
        sentences = ds.dataset(files, format="ipc") if files else _empty_table(self.manifest)
        con.register("__sentences", sentences)
        con.register("__shards", shards_table(self.manifest))
        con.execute("CREATE VIEW sentences AS SELECT * FROM __sentences")
        con.execute("CREATE VIEW shards AS SELECT * FROM __shards")
        # No file access from SQL: a query can read the views but not write next to the cache.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con


def open_cache(path: str | Path, *, require_complete: bool = True, checksums: bool = True) -> Cache:
    """Open a cache directory written by `pipeline embed`; raise `CacheError` if unusable."""
    path = Path(path)
    if not path.exists():
        raise CacheError(
            f"cache {path} does not exist; create it with `pipeline embed --out {path}`"
        )
    if not path.is_dir():
        raise CacheError(f"cache path {path} is a file, expected a cache directory")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.exists() and any(path.glob("manifest.rank*.json")):
        raise CacheError(
            f"cache {path} is an unfinished multi-process run; rerun the same torchrun command"
        )
    manifest = read_manifest(manifest_path)
    if require_complete and not manifest.complete:
        raise CacheError(
            f"cache {path} is incomplete ({manifest.num_rows} rows so far); rerun the same "
            "`pipeline embed` command to finish it"
        )
    return Cache(path, manifest, checksums=checksums)


def shards_table(manifest: Manifest) -> pa.Table:
    fields = ["file", "rows", "bytes", "sha256", "first_id", "last_id", "rank"]
    cols = {f: [getattr(s, f) for s in manifest.shards] for f in fields}
    types = [pa.string(), pa.int64(), pa.int64(), pa.string(), pa.int64(), pa.int64(), pa.int32()]
    return pa.table({f: pa.array(cols[f], t) for f, t in zip(fields, types, strict=True)})


def _empty_table(manifest: Manifest) -> pa.Table:
    # An empty cache still answers SQL with its columns; types come from the recorded schema.
    from cache.schema import schema_from_manifest

    return schema_from_manifest(manifest).empty_table()


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
