"""Stage one: stream a corpus through the teacher into a sharded, resumable Arrow cache.

The stream of sentences is cut into fixed windows of `window` sentences. A sentence's id is its
position in the stream, so ids never depend on batching, sharding or the number of processes.
Each window is tokenized, sorted by length, cut into batches by a token budget, encoded, and
written back in id order. Shards end on window boundaries, so a resumed run restarts at the
first window no shard holds and reproduces exactly the rows of an uninterrupted run.

Three workers overlap: a child process reads and splits the corpus (pure Python, so it must
not share the GIL with the teacher), the main thread tokenizes (Rust) and runs the teacher, and a
thread writes and checksums shards.

Under torchrun each rank runs `embed()` on its share of the windows; the rank helpers (process
group, barriers, the merge at the end) are in `pipeline/distributed.py`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from cache import CacheWriter, Manifest, ShardInfo, sentence_schema
from cache.errors import CacheError, SraError
from cache.lock import CacheLock, describe_holder
from cache.manifest import EMBEDDINGS_NAME, TOKENIZER_NAME
from cache.options import nested, option
from cache.writer import unmerge
from pipeline.corpus import CorpusSpec, CorpusStats, check_files, describe_corpus
from pipeline.distributed import (
    any_rank,
    barrier,
    dist_env,
    init_process_group,
    merge_when_all_done,
    watch_launcher,
)
from pipeline.progress import EmbedProgress, StartupClock
from pipeline.reader import CorpusReader, ReadPlan, Window
from pipeline.sentences import FilterConfig, describe_filters, iter_sentences

if TYPE_CHECKING:  # the teacher (torch, transformers) loads only when embed() runs, so
    # that commands which only read this module's config start fast
    from pipeline.teacher import Teacher


@dataclass(frozen=True)
class EmbedConfig:
    """Everything `pipeline embed` takes; its fields are the command's options."""

    corpus: str = option(
        MISSING,
        "wiki | a file or folder (.txt[.gz]/.jsonl[.gz]/.parquet) | hf:NAME[:CONFIG] | glue:TASK "
        "(sst2, cola, mrpc, stsb, qqp, mnli, qnli, rte, wnli) | task:PATH (a folder of "
        "train, dev and optional test files) | task:hf:NAME[:CONFIG] | task (with --train, --dev)",
    )
    out: Path = option(MISSING, "Cache directory to create or resume.")
    wiki_dump: str | None = option(
        None,
        "Local WikiExtractor dump (plain or .gz) for --corpus wiki; default: "
        "$PIPELINE_WIKI_DUMP, else the hub's wikimedia/wikipedia.",
    )
    split: str = option("train", "Split of an hf: dataset.")
    text_field: str = option("text", "Text field of .jsonl/.parquet/hf: data.")
    teacher: str | None = option(
        None,
        "Hub name or local folder of a BERT-family encoder "
        "[default: sentence-transformers/all-MiniLM-L6-v2, packaged copy]",
    )
    poolings: tuple[str, ...] = option(
        ("mean",),
        "Comma list of mean, cls, pooler, mean_layerN (the mean of hidden layer N).",
        flag="pooling",
    )
    max_length: int = option(128, "Truncate sentences to this many tokens.")
    limit: int | None = option(
        None, "Stop after N sentences (a larger --limit later grows the cache)."
    )
    dtype: str = option("auto", "auto | fp32 | bf16 | fp16 (auto: bf16 where fast).")
    device: str = option("auto", "auto | cpu | cuda.")
    normalize: bool = option(False, "Store unit-length vectors.")
    overwrite: bool = option(
        False, "Start over: replace the cache in --out (of this config or another)."
    )
    repair: bool = option(
        False,
        "Check every shard's sha256 first and embed the failing ones again (missing or "
        "wrong-sized shards are always embedded again).",
    )
    # Ids are stream positions and windows the resume unit, so the window is part of the
    # cache's identity; 4096 sorts enough sentences by length for little padding.
    window: int = option(4096, "Sentences sorted by length together (resume unit).")
    token_budget: int | None = option(None, "Tokens per teacher batch [4096 on CPU, 32768 on GPU].")
    shard_rows: int = option(50_000, "Roll over to a new shard after N rows.")
    shard_mb: int = option(256, "... or after this many MB.")
    filters: FilterConfig = nested(FilterConfig)
    progress: bool = option(True, "Show progress.")
    trust_remote_code: bool = option(False, "Allow code from the teacher's repo.")
    # ~30 s of compilation up front, then ~20% faster on CPU: for long runs only.
    compile: bool = option(False, "torch.compile the teacher: ~30 s start-up, ~20% faster.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))  # accept a str from Python callers
        for name, low in (("window", 1), ("shard_rows", 1), ("shard_mb", 1), ("max_length", 2)):
            if getattr(self, name) < low:
                raise SraError(f"--{name.replace('_', '-')} must be >= {low}")
        if self.limit is not None and self.limit < 1:
            raise SraError(f"--limit must be a positive number of sentences, got {self.limit}")
        if self.token_budget is not None and self.token_budget < 1:
            raise SraError(f"--token-budget must be >= 1, got {self.token_budget}")


class Extension(Protocol):
    """What a layer above stage one plugs into `embed()`: its own texts and side files.

    Task corpora (`pipeline/tasks/corpus.py`) are the one user. Their texts are embedded as
    they are (no splitting, filtering or dedup), a text's id is its position in the list, and
    `finish` writes files beside the rows once every text is in the cache.
    """

    #: load the teacher with its classification head (its logits are cached beside the rows)
    wants_logits: bool

    def describe(self) -> dict[str, Any]:
        """The corpus part of the cache's identity (manifest and fingerprint)."""
        ...

    def check(self, teacher: Teacher) -> None:
        """Refuse a teacher this corpus cannot use, before anything is written."""
        ...

    def texts(self, teacher: Teacher) -> list[str]:
        """The texts to embed; called only when the cache is not complete yet."""
        ...

    def finish(self, writer: CacheWriter, teacher: Teacher, budget: int) -> None:
        """Write the side files; every text is in the cache by now."""
        ...


def embed(cfg: EmbedConfig, extension: Extension | None = None) -> Manifest:
    """Run stage one; returns the cache's manifest (this rank's part when distributed).

    Steps: check the corpus (before the teacher loads or --out is touched), lock --out, load
    the teacher, open the cache (new, resume, grow, repair, or refuse), stream the windows it
    lacks through the teacher into shards, finish.
    """
    if cfg.out.exists() and not cfg.out.is_dir():
        raise SraError(f"--out {cfg.out} is a file; choose a directory")
    marks = StartupClock()
    rank, world, local_world = dist_env()
    launcher = watch_launcher() if world > 1 else None
    spec = CorpusSpec(cfg.corpus, cfg.wiki_dump, cfg.split, cfg.text_field)
    corpus_info = extension.describe() if extension is not None else _check_corpus(cfg, spec)

    # The reader process starts now, before torch is imported and the teacher loads, and reads
    # the first windows meanwhile (start-up is most of a small job's time).
    prefetch = 0 if extension is not None else min(cfg.limit or 2 * cfg.window, 2 * cfg.window)
    with (
        EmbedProgress(enabled=cfg.progress) as progress,
        CacheLock(cfg.out, rank) as lock,
        CorpusReader(spec, cfg.filters, prefetch) as reader,
    ):
        if lock.previous is not None:
            gone = describe_holder(lock.previous)
            _log(f"{cfg.out}: taking over the lock of a run that is gone ({gone})")
        progress.phase(f"loading the teacher {cfg.teacher or '(the default, all-MiniLM-L6-v2)'}")
        # The weights' checksum (the teacher's identity) is read beside the imports and the
        # load, not after them: hashlib works without the GIL.
        hashing = threading.Thread(target=_hash_weights, args=(cfg.teacher,), daemon=True)
        hashing.start()
        import torch

        from pipeline.teacher import Teacher

        if world > 1:
            # Ranks share the machine's cores; oversubscribing threads slows every rank down.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        teacher = Teacher(
            cfg.teacher,
            cfg.poolings,
            cfg.max_length,
            cfg.dtype,
            cfg.device,
            cfg.trust_remote_code,
            compile=cfg.compile,
            logits=extension is not None and extension.wants_logits,
        )
        marks.mark("teacher_loaded")
        hashing.join()
        if extension is not None:
            extension.check(teacher)
        config = {
            "teacher": teacher.describe(cfg.normalize),
            "corpus": corpus_info,
            "window": cfg.window,
        }
        if world > 1:
            init_process_group()
        run = _Run(cfg, extension, teacher, progress, reader, rank, world, launcher, marks)
        manifest = run.into(config)
        if world > 1 and run.worked:
            manifest = merge_when_all_done(cfg.out, rank, world)
    return manifest


@dataclass
class _Work:
    """What this run must do to a cache that exists: decided from the manifest and the files."""

    limit: int | None  # the stream's --limit for this run (the cache's own when not growing)
    redo: list[ShardInfo]  # damaged shards to write again, same names, ids and rows
    files: list[str]  # damaged side files to write again
    truncate: list[ShardInfo]  # a tail shard whose last window the old limit cut short
    grow: bool  # a larger --limit than the complete cache was made with
    complete: bool  # the cache was complete when opened

    @property
    def needed(self) -> bool:
        return not self.complete or bool(self.redo or self.files or self.truncate or self.grow)


class _Run:
    """One `embed()` into an opened, locked --out: the steps after the teacher has loaded."""

    def __init__(
        self,
        cfg: EmbedConfig,
        extension: Extension | None,
        teacher: Teacher,
        progress: EmbedProgress,
        reader: CorpusReader,
        rank: int,
        world: int,
        launcher: int | None,
        marks: StartupClock,
    ) -> None:
        self.marks = marks
        self.cfg = cfg
        self.extension = extension
        self.teacher = teacher
        self.progress = progress
        self.reader = reader
        self.rank = rank
        self.world = world
        self.launcher = launcher
        budget = cfg.token_budget or (32768 if teacher.device.type == "cuda" else 4096)
        self.budget = max(budget, cfg.max_length)
        self.worked = False  # this run wrote to the cache (so a multi-process run must merge)

    def into(self, config: dict[str, Any]) -> Manifest:
        cfg, rank, world = self.cfg, self.rank, self.world
        schema = sentence_schema(self.teacher.poolings, self.teacher.hidden_size)
        if world > 1 and rank > 0:
            barrier()  # rank 0 prepares the directory first (--overwrite clears it)
        writer = CacheWriter(
            cfg.out,
            config,
            schema,
            shard_rows=cfg.shard_rows,
            shard_bytes=cfg.shard_mb << 20,
            overwrite=cfg.overwrite and rank == 0,
            rank=rank,
            world_size=world,
        )
        with writer:
            if world > 1 and rank == 0:
                barrier()
            if writer.replaced:
                _log(f"{cfg.out}: --overwrite: the cache that was there is removed, starting over")
            work = self.plan(writer)
            needed = work.needed or (world > 1 and not writer.from_merged)
            if world > 1:
                needed = any_rank(needed)  # every rank must come to the merge, or none
            if not needed:
                rows = writer.manifest.num_rows
                _log(f"{cfg.out} is complete ({rows:,} rows, every shard in place); nothing to do")
                return writer.manifest
            self.worked = True
            self.apply(writer, work)
            return self.stream(writer, work)

    def plan(self, writer: CacheWriter) -> _Work:
        """Decide what to (re)do: damaged shards and files, a larger --limit, or nothing."""
        cfg, m = self.cfg, writer.manifest
        assert m is not None
        damaged, files = writer.check(deep=cfg.repair)
        work = _Work(cfg.limit, damaged, files, [], False, m.complete)
        if writer.started_fresh:
            return work
        old = m.stream.get("limit")
        if m.complete:
            have = int(m.stream.get("sentences", m.num_rows))
            exhausted = bool(m.stream.get("exhausted", old is None))
            work.limit = old
            if cfg.limit is not None and cfg.limit < have:
                _log(
                    f"{cfg.out} already holds {have:,} sentences"
                    + (f" (made with --limit {old:,})" if old is not None else "")
                    + f"; --limit {cfg.limit:,} takes nothing away: use the rows with id < "
                    f"{cfg.limit:,}, or pass --overwrite to re-create the cache"
                )
            elif exhausted and cfg.limit != old:
                _log(f"{cfg.out} already holds all {have:,} sentences of the corpus")
            elif cfg.limit != old:
                work.grow, work.limit = True, cfg.limit
                _log(
                    f"{cfg.out}: growing from {have:,} sentences to "
                    + ("the whole corpus" if cfg.limit is None else f"--limit {cfg.limit:,}")
                    + " (the rows already there keep their ids)"
                )
        else:
            mine = [s for s in m.shards if s.rank == writer.rank]
            held = max((s.last_id + 1 for s in mine), default=0)
            if cfg.limit is not None and cfg.limit < held:
                raise CacheError(
                    f"{cfg.out} holds {held:,} sentences of an unfinished run, more than "
                    f"--limit {cfg.limit:,}; rerun with "
                    + (f"--limit {old:,}" if old is not None else f"a --limit of at least {held:,}")
                    + " to finish it, or pass --overwrite to start over"
                )
        if work.grow or not work.complete:
            # The last window of a stream cut by --limit holds fewer sentences than a window:
            # a longer stream fills it, so its shard is embedded again (ids unchanged).
            mine = [s for s in m.shards if s.rank == writer.rank]
            tail = max(mine, key=lambda s: s.last_window, default=None)
            if tail is not None and tail.last_id < (tail.last_window + 1) * cfg.window - 1:
                work.truncate = [tail]
                work.redo = [s for s in work.redo if s is not tail]
        if work.redo or work.files:
            names = [s.file for s in work.redo] + work.files
            _log(
                f"{cfg.out}: {len(names)} damaged file(s) ({', '.join(names[:5])}"
                + (", …" if len(names) > 5 else "")
                + "): writing them again (a shard's windows are embedded again: same ids and rows)"
            )
        return work

    def apply(self, writer: CacheWriter, work: _Work) -> None:
        assert writer.manifest is not None
        if writer.manifest.complete:
            writer.reopen()
        if self.world > 1 and writer.from_merged:  # the same on every rank
            barrier()  # every rank has its own manifest again: the merged one can go
            if self.rank == 0:
                unmerge(self.cfg.out)
        if work.files:
            writer.forget_files(work.files)
        if work.redo:
            writer.redo(work.redo)
        if work.truncate:
            writer.truncate(work.truncate)
        # Recorded now, so an interrupted run can say what it was started with.
        writer.manifest.stream["limit"] = work.limit

    def stream(self, writer: CacheWriter, work: _Work) -> Manifest:
        """Read the corpus, embed the windows the cache lacks, write them, finish."""
        cfg, teacher, progress, limit = self.cfg, self.teacher, self.progress, work.limit
        texts = self.extension.texts(teacher) if self.extension is not None else None
        start, redo = writer.next_window, tuple(writer.redo_windows)
        done = writer.resumed_rows
        if redo:
            progress.phase(f"reading the corpus up to window {redo[0]} (the first to redo)")
        if start and not (work.complete and not work.grow):
            _log(f"resuming {cfg.out} at window {start} ({done:,} rows kept)")
            if not redo:
                progress.phase(
                    f"reading the corpus up to window {start} (the rows before it are kept)"
                )
        plan = ReadPlan(
            self.reader.spec,
            cfg.filters,
            limit,
            cfg.window,
            start,
            self.rank,
            self.world,
            teacher.tokenizer_json().decode(),
            sentences=texts,
            redo=redo,
        )
        total = len(texts) if texts is not None else limit
        if total is not None and self.world > 1:
            total = -(-total // self.world)
        t0 = time.monotonic()
        progress.start(total, done)
        stats = self.run_windows(self.reader.windows(plan), writer)
        seconds = time.monotonic() - t0
        if self.extension is not None:
            writer.flush()
            self.extension.finish(writer, teacher, self.budget)
        sps, tps = progress.rate
        embedded = progress.sentences - done
        return writer.finish(
            {
                "rows_this_run": embedded,
                "tokens_this_run": progress.tokens,
                "seconds_this_run": round(seconds, 2),
                "sentences_per_second": round(sps, 1),
                "steady_sentences_per_second": round(progress.steady_rate or sps, 1),
                "tokens_per_second": round(tps, 1),
                "device": str(teacher.device),
                "startup_seconds": self.marks.as_dict(),
                "corpus": stats.as_dict(),
            },
            stream={
                "limit": limit,
                "sentences": stats.emitted,
                "exhausted": limit is None or stats.emitted < limit,
            },
        )

    def run_windows(
        self, windows: Iterator[Window | CorpusStats], writer: CacheWriter
    ) -> CorpusStats:
        """Encode each window here; hand it to the writer thread, one window in flight."""
        teacher, progress = self.teacher, self.progress
        pending: Future[None] | None = None
        stats = CorpusStats()
        first = True

        def on_batch(sentences: int, tokens: int) -> None:
            if progress.sentences == start_rows:
                self.marks.mark("first_batch_done")
            progress.update(sentences, tokens, shards=len(writer.manifest.shards))

        start_rows = progress.sentences

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as pool:
            try:
                # The side files for stage two (tokenizer, embedding matrix) are written
                # beside the first windows' compute, not before it.
                pending = (
                    pool.submit(_write_side_files, writer, teacher) if self.rank == 0 else None
                )
                for window in windows:
                    self.check_launcher()
                    if isinstance(window, CorpusStats):
                        stats = window
                        continue
                    if first:
                        first = False
                        self.marks.mark("first_window_read")
                        progress.phase(
                            "compiling the teacher (torch.compile: the first batches take a while)"
                            if teacher.compiled
                            else "embedding"
                        )
                    table = encode_window(
                        window, teacher, self.budget, self.cfg.normalize, writer.schema, on_batch
                    )
                    if pending is not None:
                        pending.result()  # surfaces a write error (disk full) right away
                    pending = pool.submit(writer.write, table, window.index)
                if pending is not None:
                    pending.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return stats

    def check_launcher(self) -> None:
        if self.launcher is not None and os.getppid() != self.launcher:
            raise SraError("the torchrun launcher is gone; stopping (rerun the same command)")


def _hash_weights(name: str | None) -> None:
    from pipeline.teacher import resolve_teacher, weights_sha256

    with contextlib.suppress(OSError):  # the teacher's own load reports a missing folder
        weights_sha256(resolve_teacher(name))


def _check_corpus(cfg: EmbedConfig, spec: CorpusSpec) -> dict[str, Any]:
    """The corpus's identity, after reading the first records of each file and pulling one
    sentence: a missing, empty, unreachable or malformed corpus fails before the teacher
    loads and before --out is touched. The reader process streams it again from the start."""
    check_files(spec)
    stats = CorpusStats()
    if next(iter_sentences(spec, cfg.filters, cfg.limit, stats), None) is None:
        raise SraError(
            f"corpus {cfg.corpus!r} gave no sentences after filtering "
            f"({_stats_line(stats)}); check the path, --text-field and the length filters"
        )
    # --limit is not part of the identity: a larger one grows the cache (see _Run.plan).
    return describe_corpus(spec) | {"filters": describe_filters(cfg.filters)}


def encode_window(
    window: Window,
    teacher: Teacher,
    budget: int,
    normalize: bool,
    schema: pa.Schema,
    on_batch: Callable[[int, int], None] | None = None,
) -> pa.Table:
    """One window's table: sentences sorted by length into token-budget batches, encoded,
    put back in id order. `on_batch(sentences, tokens)` is called after each batch."""
    from pipeline.teacher import budget_batches

    n = len(window.ids)
    lengths = np.fromiter((len(x) for x in window.ids), dtype=np.int32, count=n)
    vectors = {p: np.empty((n, teacher.hidden_size), np.float32) for p in teacher.poolings}
    for idx in budget_batches(lengths, budget):
        out = teacher.encode([window.ids[k] for k in idx], normalize)
        for pooling, vecs in out.items():
            vectors[pooling][idx] = vecs
        if on_batch is not None:
            on_batch(len(idx), int(lengths[idx].sum()))

    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(window.ids), np.int32, int(offsets[-1]))
    ids = np.arange(n, dtype=np.int64) + window.first_id
    columns: dict[str, pa.Array] = {
        "id": pa.array(ids),
        "text": pa.array(window.texts, pa.string()),
        "source": pa.array(window.sources, pa.string()),
        "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
        "n_tokens": pa.array(lengths),
        "truncated": pa.array(window.truncated, pa.bool_()),
    }
    for pooling, vecs in vectors.items():
        columns[pooling] = pa.FixedSizeListArray.from_arrays(
            pa.array(vecs.reshape(-1)), teacher.hidden_size
        )
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _write_side_files(writer: CacheWriter, teacher: Teacher) -> None:
    """The tokenizer and input-embedding matrix, so stage two needs no teacher and no hub."""
    from safetensors.numpy import save

    assert writer.manifest is not None
    if TOKENIZER_NAME not in writer.manifest.files:
        writer.put_file(TOKENIZER_NAME, teacher.tokenizer_json())
    if EMBEDDINGS_NAME not in writer.manifest.files:
        meta = {"teacher": teacher.name, "pad_id": str(teacher.pad_id)}
        data = save({"word_embeddings": teacher.embedding_matrix()}, metadata=meta)
        writer.put_file(EMBEDDINGS_NAME, data)


def _stats_line(stats: CorpusStats) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats.as_dict().items() if v)


def _log(message: str) -> None:
    print(message, file=sys.stderr)
