"""Stage one: stream a corpus through the teacher into a sharded, resumable Arrow cache.

The stream of sentences is cut into fixed windows of `window` sentences. A sentence's id is its
position in the stream, so ids never depend on batching, sharding or the number of processes.
Each window is tokenized, sorted by length, cut into batches by a token budget, encoded, and
written back in id order. Shards end on window boundaries, so a resumed run restarts at the
first window no shard holds and reproduces exactly the rows of an uninterrupted run.

Three workers overlap: a child process reads and splits the corpus (pure Python, so it must
not share the GIL with the teacher), the main thread tokenizes (Rust) and runs the teacher, and a
thread writes and checksums shards.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from cache import CacheWriter, Manifest, merge_rank_manifests, sentence_schema
from cache.errors import SraError
from cache.manifest import EMBEDDINGS_NAME, TOKENIZER_NAME
from cache.options import nested, option
from pipeline.corpus import CorpusSpec, CorpusStats, describe_corpus
from pipeline.progress import EmbedProgress
from pipeline.reader import ReadPlan, Window, read_windows
from pipeline.sentences import FilterConfig, describe_filters, iter_sentences

if TYPE_CHECKING:  # the teacher (torch, transformers) loads only when embed() runs, so
    # that commands which only read this module's config start fast
    from pipeline.teacher import Teacher


@dataclass(frozen=True)
class EmbedConfig:
    """Everything `pipeline embed` takes; its fields are the command's options."""

    corpus: str = option(
        MISSING,
        "wiki | a file or folder (.txt/.jsonl/.parquet[.gz]) | hf:NAME[:CONFIG] | glue:TASK "
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
    limit: int | None = option(None, "Stop after N sentences.")
    dtype: str = option("auto", "auto | fp32 | bf16 | fp16 (auto: bf16 where fast).")
    device: str = option("auto", "auto | cpu | cuda.")
    normalize: bool = option(False, "Store unit-length vectors.")
    overwrite: bool = option(False, "Replace a cache made with another config.")
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


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local world size) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if world < 1 or not 0 <= rank < world:
        raise SraError(f"bad RANK={rank} / WORLD_SIZE={world} in the environment")
    return rank, world, local


def embed(cfg: EmbedConfig, extension: Extension | None = None) -> Manifest:
    """Run stage one; returns the cache's manifest (this rank's part when distributed).

    Steps: check the corpus (before the teacher loads or --out is touched), load the teacher,
    open the cache (resume or refuse), stream windows through the teacher into shards, finish.
    """
    if cfg.out.exists() and not cfg.out.is_dir():
        raise SraError(f"--out {cfg.out} is a file; choose a directory")
    import torch

    from pipeline.teacher import Teacher

    rank, world, local_world = dist_env()
    if world > 1:
        # Ranks share the machine's cores; oversubscribing threads slows every rank down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))

    spec = CorpusSpec(cfg.corpus, cfg.wiki_dump, cfg.split, cfg.text_field)
    corpus_info = extension.describe() if extension is not None else _check_corpus(cfg, spec)
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
    if extension is not None:
        extension.check(teacher)
    budget = cfg.token_budget or (32768 if teacher.device.type == "cuda" else 4096)
    budget = max(budget, cfg.max_length)
    config = {
        "teacher": teacher.describe(cfg.normalize),
        "corpus": corpus_info,
        "window": cfg.window,
    }
    schema = sentence_schema(teacher.poolings, teacher.hidden_size)
    if world > 1:
        _init_process_group()

    with CacheWriter(
        cfg.out,
        config,
        schema,
        shard_rows=cfg.shard_rows,
        shard_bytes=cfg.shard_mb << 20,
        overwrite=cfg.overwrite,
        rank=rank,
        world_size=world,
    ) as writer:
        if writer.already_complete:
            _log(
                f"{cfg.out} is already complete ({writer.manifest.num_rows:,} rows); nothing to do"
            )
            return writer.manifest
        if rank == 0:
            _write_side_files(writer, teacher)
        texts = extension.texts(teacher) if extension is not None else None
        start = writer.next_window
        if start:
            _log(f"resuming {cfg.out} at window {start} ({writer.resumed_rows:,} rows kept)")
        t0 = time.monotonic()
        total = None if cfg.limit is None else -(-cfg.limit // world)
        plan = ReadPlan(
            spec,
            cfg.filters,
            cfg.limit,
            cfg.window,
            start,
            rank,
            world,
            teacher.tokenizer_json().decode(),
            sentences=texts,
        )
        with EmbedProgress(total, done=writer.resumed_rows, enabled=cfg.progress) as progress:
            stats = _run(read_windows(plan), teacher, writer, budget, cfg.normalize, progress)
        seconds = time.monotonic() - t0
        if extension is not None:
            writer.flush()
            extension.finish(writer, teacher, budget)
        sps, tps = progress.rate
        manifest = writer.finish(
            {
                "rows_this_run": progress.sentences - writer.resumed_rows,
                "tokens_this_run": progress.tokens,
                "seconds_this_run": round(seconds, 2),
                "sentences_per_second": round(sps, 1),
                "steady_sentences_per_second": round(progress.steady_rate or sps, 1),
                "tokens_per_second": round(tps, 1),
                "device": str(teacher.device),
                "corpus": stats.as_dict(),
            }
        )
    if world > 1:
        manifest = _merge_when_all_done(cfg.out, rank, world)
    return manifest


def _check_corpus(cfg: EmbedConfig, spec: CorpusSpec) -> dict[str, Any]:
    """The corpus's identity, after pulling one sentence: a missing, empty or unreachable
    corpus fails before the teacher loads and before --out is touched. The reader process
    streams it again from the start."""
    stats = CorpusStats()
    if next(iter_sentences(spec, cfg.filters, cfg.limit, stats), None) is None:
        raise SraError(
            f"corpus {cfg.corpus!r} gave no sentences after filtering "
            f"({_stats_line(stats)}); check the path, --text-field and the length filters"
        )
    return describe_corpus(spec) | {"filters": describe_filters(cfg.filters), "limit": cfg.limit}


def _run(
    windows: Iterator[Window | CorpusStats],
    teacher: Teacher,
    writer: CacheWriter,
    budget: int,
    normalize: bool,
    progress: EmbedProgress,
) -> CorpusStats:
    """Encode each window here; hand it to the writer thread, one window in flight."""
    pending: Future[None] | None = None
    stats = CorpusStats()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as pool:
        try:
            for window in windows:
                if isinstance(window, CorpusStats):
                    stats = window
                    continue
                table = encode_window(window, teacher, budget, normalize, writer.schema)
                if pending is not None:
                    pending.result()  # surfaces a write error (disk full) right away
                pending = pool.submit(writer.write, table, window.index)
                progress.update(
                    len(window.texts),
                    sum(map(len, window.ids)),
                    shards=len(writer.manifest.shards),
                )
            if pending is not None:
                pending.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return stats


def encode_window(
    window: Window, teacher: Teacher, budget: int, normalize: bool, schema: pa.Schema
) -> pa.Table:
    from pipeline.teacher import budget_batches

    n = len(window.ids)
    lengths = np.fromiter((len(x) for x in window.ids), dtype=np.int32, count=n)
    vectors = {p: np.empty((n, teacher.hidden_size), np.float32) for p in teacher.poolings}
    for idx in budget_batches(lengths, budget):
        out = teacher.encode([window.ids[k] for k in idx], normalize)
        for pooling, vecs in out.items():
            vectors[pooling][idx] = vecs

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


def _init_process_group() -> None:
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))


def _merge_when_all_done(out: Path, rank: int, world: int) -> Manifest:
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        merge_rank_manifests(out, world)
    dist.barrier()
    from cache import open_cache

    manifest = open_cache(out).manifest
    dist.destroy_process_group()
    return manifest


def _stats_line(stats: CorpusStats) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats.as_dict().items() if v)


def _log(message: str) -> None:
    print(message, file=sys.stderr)
