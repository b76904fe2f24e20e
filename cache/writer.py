"""Writing a cache: shards appear atomically, the manifest records each one, runs resume.

A shard is built in memory from whole stream windows, written to a hidden temporary file,
fsynced, renamed, and only then listed in the manifest. A process killed at any moment leaves
either the old manifest or the new one, never a listed shard that is partial.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cache.errors import CacheError
from cache.files import fsync_dir, sha256_file, write_atomic
from cache.lock import is_lock_file
from cache.manifest import (
    EMBEDDINGS_NAME,
    MANIFEST_NAME,
    STATUS_COMPLETE,
    STATUS_IN_PROGRESS,
    TOKENIZER_NAME,
    Manifest,
    ShardInfo,
    fingerprint,
    now,
    read_manifest,
    write_manifest,
)

DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def rank_manifest_name(rank: int) -> str:
    return f"manifest.rank{rank}.json"


def shard_name(rank: int, world_size: int, index: int) -> str:
    return f"shard-{index:05d}.arrow" if world_size == 1 else f"shard-r{rank:02d}-{index:05d}.arrow"


def is_cache_file(name: str) -> bool:
    """Files a cache directory may hold; --overwrite removes these and nothing else."""
    return (
        name in (MANIFEST_NAME, TOKENIZER_NAME, EMBEDDINGS_NAME)
        or (name.startswith("manifest.rank") and name.endswith(".json"))
        or (name.startswith("shard-") and name.endswith(".arrow"))
        or (name.startswith(".") and ".tmp" in name)
        or is_lock_file(name)
    )


class CacheWriter:
    """Context manager that writes (or resumes, grows, repairs) one rank's part of a cache.

    >>> with CacheWriter(out, config, schema) as w:           # doctest: +SKIP
    ...     for window, table in windows(start=w.next_window):
    ...         w.write(table, window)
    ...     w.finish(totals={...})

    `config` is the explicit JSON description of everything that determines the content; its
    fingerprint decides whether an existing directory is resumed or refused. Repair: `check()`
    finds shards whose file is missing, has the wrong size or (deep) fails its checksum,
    `redo()` marks them, and the windows they held, written again through `write()`, replace
    them under the same name. Growth: `reopen()` turns a complete cache back into one in
    progress, `truncate()` drops a tail shard whose last window was cut short by the limit.
    """

    def __init__(
        self,
        path: str | Path,
        config: dict[str, Any],
        schema: pa.Schema,
        *,
        shard_rows: int = 50_000,
        shard_bytes: int = 256 << 20,
        overwrite: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.schema = schema
        self.shard_rows = max(1, shard_rows)
        self.shard_bytes = max(1, shard_bytes)
        self.overwrite = overwrite
        self.rank = rank
        self.world_size = world_size
        self.fingerprint = fingerprint(config)
        self.manifest_path = self.path / (
            MANIFEST_NAME if world_size == 1 else rank_manifest_name(rank)
        )
        self.manifest: Manifest | None = None
        self._read_from = self.manifest_path
        # The manifest was the merged one of a finished multi-process run (see `reopen`).
        self.from_merged = False
        # A new cache was started in this run (nothing was there, or --overwrite replaced it).
        self.started_fresh = False
        self.replaced = False  # --overwrite removed an existing cache
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._pending_windows: list[int] = []
        # Shards being written again: window -> the shard that holds it, and its tables so far.
        self._redo: dict[int, ShardInfo] = {}
        self._redo_tables: list[pa.Table] = []

    # -- opening ------------------------------------------------------------------------

    def __enter__(self) -> CacheWriter:
        self._prepare_directory()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On failure the windows held in memory are dropped: the manifest still describes
        # exactly the complete shards, so the next run resumes after them.
        self._pending.clear()
        self._redo_tables.clear()
        if (
            exc_type is not None
            and self.started_fresh
            and self.world_size == 1
            and self.manifest is not None
            and not self.manifest.shards
        ):
            # Nothing was written: leave no half-made cache behind (a rerun after fixing the
            # input then starts clean instead of meeting a 0-row cache of another config).
            self._clear()

    @property
    def next_window(self) -> int:
        """First stream window this rank has not yet written."""
        assert self.manifest is not None
        mine = [s.last_window for s in self.manifest.shards if s.rank == self.rank]
        return max(mine) + 1 if mine else 0

    @property
    def resumed_rows(self) -> int:
        """Rows of this rank that are kept: listed and not being written again."""
        assert self.manifest is not None
        redo = {id(s) for s in self._redo.values()}
        return sum(s.rows for s in self._mine() if id(s) not in redo)

    @property
    def redo_windows(self) -> list[int]:
        return sorted(self._redo)

    def _mine(self) -> list[ShardInfo]:
        assert self.manifest is not None
        return [s for s in self.manifest.shards if s.rank == self.rank]

    def _prepare_directory(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise CacheError(f"{self.path} is a file, not a directory; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _disk_error(e, self.path) from None
        existing = self._existing_manifest()
        if existing is not None and existing.fingerprint != self.fingerprint:
            existing = _migrate_legacy(existing, self.config, self.fingerprint)
        if existing is not None and self.overwrite:
            # --overwrite always starts over, also over a cache of the same config: the user
            # asked for a new cache, and a silent "nothing to do" would ignore that.
            self._clear()
            self.replaced = True
            existing = None
        elif existing is not None and existing.fingerprint != self.fingerprint:
            if self.world_size == 1 and not existing.complete and not existing.shards:
                # An unfinished cache with no rows costs nothing to restart (a run that failed
                # on bad input, then the input was fixed): no reason to refuse it.
                self._clear()
                existing = None
            else:
                changed = _changed_keys(existing.config, self.config)
                raise CacheError(
                    f"{self.path} holds a cache made with a different config "
                    f"(differs in: {', '.join(changed) or 'fingerprint'}); "
                    "pass --overwrite to replace it or choose another --out"
                )
        elif existing is None and any(not is_cache_file(p.name) for p in self.path.iterdir()):
            raise CacheError(
                f"{self.path} is not empty and is not a cache; choose a new or empty --out"
            )

        if existing is None:
            self._clear_stale()
            self.started_fresh = True
            self.manifest = Manifest(
                fingerprint=self.fingerprint,
                config=self.config,
                schema=_schema_dict(self.schema),
                world_size=self.world_size,
                created_at=now(),
            )
            self._save_manifest()
            return

        if existing.world_size != self.world_size and not existing.complete:
            raise CacheError(
                f"{self.path} was started by {existing.world_size} process(es); resume it with "
                f"the same number (torchrun --nproc-per-node {existing.world_size}) or --overwrite"
            )
        self.manifest = existing
        self.from_merged = self.world_size > 1 and self._read_from == self.path / MANIFEST_NAME
        if not existing.complete:
            self._clear_stale()

    def _existing_manifest(self) -> Manifest | None:
        main = self.path / MANIFEST_NAME
        self._read_from = main
        if main.exists():
            m = read_manifest(main)
            if m.complete or self.world_size == 1:
                return m
        mine = self.path / rank_manifest_name(self.rank)
        if self.world_size > 1 and mine.exists():
            self._read_from = mine
            return read_manifest(mine)
        if self.world_size == 1 and any(self.path.glob("manifest.rank*.json")):
            raise CacheError(
                f"{self.path} holds an unfinished multi-process cache; resume it with torchrun "
                "and the same --nproc-per-node, or pass --overwrite"
            )
        if self.world_size > 1 and main.exists():
            return read_manifest(main)
        return None

    def _clear(self) -> None:
        for p in self.path.iterdir():
            if is_cache_file(p.name) and not is_lock_file(p.name):
                p.unlink() if p.is_file() else shutil.rmtree(p)

    def _clear_stale(self) -> None:
        # Shards of this rank that the manifest does not list were written by a run that was
        # killed before recording them: they are not trusted and will be written again.
        listed = {s.file for s in self.manifest.shards} if self.manifest else set()
        prefix = "shard-" if self.world_size == 1 else f"shard-r{self.rank:02d}-"
        for p in self.path.iterdir():
            name = p.name
            stale_tmp = name.startswith(f".{prefix}") and ".tmp" in name
            if stale_tmp or (
                name.startswith(prefix) and name.endswith(".arrow") and name not in listed
            ):
                p.unlink(missing_ok=True)

    # -- checking, repairing, growing ---------------------------------------------------

    def check(self, deep: bool = False) -> tuple[list[ShardInfo], list[str]]:
        """This rank's damaged shards and side files: missing or of the wrong size; with
        `deep`, also failing their sha256 (reads every byte, ~1 s per GB)."""
        assert self.manifest is not None
        shards = []
        # A cache made by another number of processes: look at all of it (to refuse a repair
        # with the right message, `reopen`); otherwise at this rank's shards.
        mine = self._mine() if self.manifest.world_size == self.world_size else self.manifest.shards
        for info in mine:
            p = self.path / info.file
            try:
                ok = p.stat().st_size == info.bytes and (not deep or sha256_file(p) == info.sha256)
            except FileNotFoundError:
                ok = False
            if not ok:
                shards.append(info)
        files = []
        if self.rank == 0:
            for name, digest in self.manifest.files.items():
                p = self.path / name
                if not p.is_file() or (deep and sha256_file(p) != digest):
                    files.append(name)
        return shards, files

    def reopen(self) -> None:
        """Turn a complete cache back into one in progress, to repair or grow it."""
        assert self.manifest is not None
        if self.manifest.world_size != self.world_size:
            n = self.manifest.world_size
            raise CacheError(
                f"{self.path} was made by {n} process(es); repair or grow it with the same "
                + (f"number (torchrun --nproc-per-node {n})" if n > 1 else "single process")
            )
        if self.from_merged:
            # Each rank goes back to its own manifest; the caller removes the merged one once
            # every rank has written its own (`unmerge`).
            self.manifest = replace(
                self.manifest,
                shards=self._mine(),
                totals=dict(self.manifest.totals),
                files=dict(self.manifest.files),
            )
        self.manifest.status = STATUS_IN_PROGRESS
        self._clear_stale()
        self._save_manifest()

    def forget_files(self, names: list[str]) -> None:
        """Side files to write again: their entries go, so the writer of each redoes it."""
        assert self.manifest is not None
        for name in names:
            self.manifest.files.pop(name, None)
            (self.path / name).unlink(missing_ok=True)
        self._save_manifest()

    def redo(self, shards: list[ShardInfo]) -> None:
        """Write these shards again: the windows they hold must come through `write()` again,
        and each replaces its shard under the same file name, ids and rows unchanged."""
        assert self.manifest is not None
        for info in shards:
            (self.path / info.file).unlink(missing_ok=True)  # damaged: never read it again
            for window in range(info.first_window, info.last_window + 1):
                if window % self.world_size == self.rank:
                    self._redo[window] = info
        self._save_manifest()

    def truncate(self, shards: list[ShardInfo]) -> None:
        """Drop tail shards of this rank (their windows are written again, as new shards)."""
        assert self.manifest is not None
        drop = {id(s) for s in shards}
        self.manifest.shards = [s for s in self.manifest.shards if id(s) not in drop]
        for info in shards:
            (self.path / info.file).unlink(missing_ok=True)
        self._update_totals()
        self._save_manifest()

    # -- writing ------------------------------------------------------------------------

    def write(self, table: pa.Table | pa.RecordBatch, window: int) -> None:
        """Add the rows of one complete stream window; shards roll over on window bounds."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        if window in self._redo:
            self._redo_tables.append(table)
            if window == max(w for w, s in self._redo.items() if s is self._redo[window]):
                self._write_again(self._redo[window])
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        self._pending_windows.append(window)
        if self._pending_rows >= self.shard_rows or self._pending_bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write what is pending as one shard (one record batch, so readers get zero copy)."""
        if not self._pending_windows:
            return
        assert self.manifest is not None
        index = len(self._mine())
        name = shard_name(self.rank, self.world_size, index)
        table = pa.concat_tables(self._pending).combine_chunks()
        size, digest = self._write_shard_file(name, table)
        ids = table.column("id")
        self.manifest.shards.append(
            ShardInfo(
                file=name,
                rows=table.num_rows,
                bytes=size,
                sha256=digest,
                first_id=int(pc.min(ids).as_py()) if table.num_rows else -1,
                last_id=int(pc.max(ids).as_py()) if table.num_rows else -1,
                rank=self.rank,
                first_window=self._pending_windows[0],
                last_window=self._pending_windows[-1],
            )
        )
        self._pending.clear()
        self._pending_rows = self._pending_bytes = 0
        self._pending_windows.clear()
        self._update_totals()
        self._save_manifest()

    def _write_again(self, old: ShardInfo) -> None:
        assert self.manifest is not None
        table = pa.concat_tables(self._redo_tables).combine_chunks()
        self._redo_tables.clear()
        ids = table.column("id")
        first = int(pc.min(ids).as_py()) if table.num_rows else -1
        last = int(pc.max(ids).as_py()) if table.num_rows else -1
        if (table.num_rows, first, last) != (old.rows, old.first_id, old.last_id):
            raise CacheError(
                f"re-embedding {old.file} gave {table.num_rows} rows (ids {first}-{last}) where "
                f"the manifest lists {old.rows} (ids {old.first_id}-{old.last_id}): the corpus "
                "changed since the cache was made; pass --overwrite to re-create the cache"
            )
        size, digest = self._write_shard_file(old.file, table)
        new = replace(old, bytes=size, sha256=digest)
        self.manifest.shards = [new if s is old else s for s in self.manifest.shards]
        self._redo = {w: s for w, s in self._redo.items() if s is not old}
        self._update_totals()
        self._save_manifest()

    def _write_shard_file(self, name: str, table: pa.Table) -> tuple[int, str]:
        """Temporary file, fsync, checksum, rename, fsync the directory: (bytes, sha256)."""
        final = self.path / name
        tmp = self.path / f".{name}.tmp"
        try:
            with open(tmp, "wb") as f:
                with pa.ipc.new_file(f, self.schema) as w:
                    for batch in table.to_batches(max_chunksize=max(1, table.num_rows)):
                        w.write_batch(batch)
                f.flush()
                os.fsync(f.fileno())
            digest = sha256_file(tmp)
            size = tmp.stat().st_size
            tmp.replace(final)
            fsync_dir(self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _disk_error(e, final) from None
        return size, digest

    def put_file(self, name: str, data: bytes) -> None:
        """A side file beside the manifest (tokenizer, embedding matrix), written atomically."""
        try:
            write_atomic(self.path / name, data)
        except OSError as e:
            raise _disk_error(e, self.path / name) from None
        assert self.manifest is not None
        self.manifest.files[name] = hashlib.sha256(data).hexdigest()
        self._save_manifest()

    def finish(
        self, totals: dict[str, Any] | None = None, stream: dict[str, Any] | None = None
    ) -> Manifest:
        """Write the last shard and mark this rank's part complete."""
        self.flush()
        assert self.manifest is not None
        if self._redo:
            missing = sorted({s.file for s in self._redo.values()})
            raise CacheError(
                f"{self.path}: the corpus no longer gives the windows of {', '.join(missing)}; "
                "it changed since the cache was made; pass --overwrite to re-create the cache"
            )
        if totals:
            self.manifest.totals.update(totals)
        if stream is not None:
            self.manifest.stream = dict(stream)
        self.manifest.status = STATUS_COMPLETE
        self._update_totals()
        self._save_manifest()
        return self.manifest

    def update_totals(self, totals: dict[str, Any]) -> None:
        assert self.manifest is not None
        self.manifest.totals.update(totals)

    def _update_totals(self) -> None:
        assert self.manifest is not None
        m = self.manifest
        m.totals.update(rows=m.num_rows, shards=len(m.shards), bytes=sum(s.bytes for s in m.shards))

    def _save_manifest(self) -> None:
        assert self.manifest is not None
        try:
            write_manifest(self.manifest_path, self.manifest)
        except OSError as e:
            raise _disk_error(e, self.manifest_path) from None


def unmerge(path: str | Path) -> None:
    """After every rank of a reopened multi-process cache wrote its own manifest (`reopen`),
    remove the merged one: the cache is a multi-process cache in progress again."""
    (Path(path) / MANIFEST_NAME).unlink(missing_ok=True)
    fsync_dir(Path(path))


def _migrate_legacy(existing: Manifest, config: dict[str, Any], fp: str) -> Manifest:
    """Caches made before --limit left the identity kept it in `config.corpus.limit`: the
    same config without it is the same cache, with the limit moved to `stream`."""
    corpus = existing.config.get("corpus")
    if not isinstance(corpus, dict) or "limit" not in corpus:
        return existing
    old = {**existing.config, "corpus": {k: v for k, v in corpus.items() if k != "limit"}}
    if fingerprint(old) != fp:
        return existing
    limit = corpus["limit"]
    emitted = existing.totals.get("corpus", {}).get("emitted")
    stream: dict[str, Any] = {"limit": limit}
    if existing.complete and isinstance(emitted, int):
        stream |= {"sentences": emitted, "exhausted": limit is None or emitted < limit}
    return replace(existing, config=config, fingerprint=fp, stream=existing.stream or stream)


def merge_rank_manifests(path: str | Path, world_size: int) -> Manifest:
    """Join the per-rank manifests of a multi-process run into the one `manifest.json`."""
    path = Path(path)
    parts = []
    for r in range(world_size):
        p = path / rank_manifest_name(r)
        m = read_manifest(p)
        if not m.complete:
            raise CacheError(f"{p}: rank {r} did not finish; rerun the same torchrun command")
        parts.append(m)
    first = parts[0]
    if any(m.fingerprint != first.fingerprint for m in parts):
        raise CacheError(f"{path}: ranks disagree on the config; rerun with --overwrite")
    merged = Manifest(
        fingerprint=first.fingerprint,
        config=first.config,
        schema=first.schema,
        status=STATUS_COMPLETE,
        world_size=world_size,
        shards=sorted((s for m in parts for s in m.shards), key=lambda s: (s.first_id, s.rank)),
        files=first.files,
        stream=first.stream,
        created_at=first.created_at,
    )
    merged.totals = _sum_totals([m.totals for m in parts])
    if "corpus" in first.totals:
        # Every rank's reader reads the whole stream (and keeps its own windows), so each
        # counted the same corpus: one rank's counts are the corpus's, their sum is not.
        merged.totals["corpus"] = first.totals["corpus"]
    merged.totals.update(
        rows=merged.num_rows, shards=len(merged.shards), bytes=sum(s.bytes for s in merged.shards)
    )
    write_manifest(path / MANIFEST_NAME, merged)
    for r in range(world_size):
        (path / rank_manifest_name(r)).unlink(missing_ok=True)
    return merged


def _sum_totals(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in parts:
        for k, v in t.items():
            if isinstance(v, dict):
                out[k] = _sum_totals([out.get(k, {}), v])
            elif isinstance(v, int | float) and not isinstance(v, bool):
                # Wall times overlap across ranks; everything else (counts) adds up.
                out[k] = max(out.get(k, 0), v) if "seconds" in k else out.get(k, 0) + v
            else:
                out[k] = v
    return out


def _disk_error(e: OSError, target: Path) -> CacheError | OSError:
    if e.errno in DISK_FULL:
        return CacheError(
            f"disk full while writing {target}: nothing partial was kept; free space and rerun "
            "the same command to resume after the last complete shard"
        )
    return CacheError(f"cannot write {target}: {e.strerror or e}")


def _schema_dict(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{k}.")
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            keys.append(prefix + k)
    return keys
