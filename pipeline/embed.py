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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from cache import CacheWriter, Manifest, merge_rank_manifests, sentence_schema
from cache.manifest import EMBEDDINGS_NAME, TOKENIZER_NAME
from cache.task_data import TASK_NAME, logits_bytes, logits_name
from cache.tasks import same_task
from pipeline.augment import AugmentConfig, Neighbours, augment_examples
from pipeline.corpus import CorpusSpec, CorpusStats, describe_corpus
from pipeline.errors import PipelineError
from pipeline.glue import Example
from pipeline.progress import EmbedProgress
from pipeline.reader import ReadPlan, Window, read_windows
from pipeline.sentences import FilterConfig, describe_filters, iter_sentences
from pipeline.task_corpus import TaskCorpus, is_task_corpus, load_task_corpus
from pipeline.teacher import Teacher, budget_batches


@dataclass
class EmbedConfig:
    """Everything `pipeline embed` takes; the CLI is a thin layer over this."""

    corpus: str
    out: Path
    wiki_dump: str | None = None
    glue_dir: str | None = None  # original GLUE TSVs for glue:TASK corpora; None: the hub
    split: str = "train"
    text_field: str = "text"
    teacher: str | None = None
    poolings: tuple[str, ...] = ("mean",)
    max_length: int = 128
    limit: int | None = None
    dtype: str = "auto"
    device: str = "auto"
    normalize: bool = False
    overwrite: bool = False
    window: int = 4096
    token_budget: int | None = None  # tokens per teacher batch; None: 4096 on CPU, 32768 on GPU
    shard_rows: int = 50_000
    shard_mb: int = 256
    filters: FilterConfig = field(default_factory=FilterConfig)
    progress: bool = True
    trust_remote_code: bool = False
    compile: bool = False  # torch.compile the teacher: ~30 s up front, ~20% faster on CPU
    logits: bool = False  # glue: corpora only: also cache a fine-tuned teacher's logits
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # glue: training examples


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local world size) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if world < 1 or not 0 <= rank < world:
        raise PipelineError(f"bad RANK={rank} / WORLD_SIZE={world} in the environment")
    return rank, world, local


def embed(cfg: EmbedConfig) -> Manifest:
    """Run stage one; returns the cache's manifest (this rank's part when distributed)."""
    if cfg.window < 1 or cfg.max_length < 2 or cfg.shard_rows < 1:
        raise PipelineError("--window, --shard-rows must be >= 1 and --max-length >= 2")
    if cfg.limit is not None and cfg.limit < 1:
        raise PipelineError(f"--limit must be a positive number of sentences, got {cfg.limit}")
    if cfg.out.exists() and not cfg.out.is_dir():
        raise PipelineError(f"--out {cfg.out} is a file; choose a directory")
    rank, world, local_world = dist_env()
    if world > 1:
        # Ranks share the machine's cores; oversubscribing threads slows every rank down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))

    spec = CorpusSpec(cfg.corpus, cfg.wiki_dump, cfg.split, cfg.text_field)
    task = None
    if (cfg.logits or cfg.augment.copies) and not is_task_corpus(cfg.corpus):
        raise PipelineError(
            "logits and --augment are per task example: use them with --corpus glue:TASK"
        )
    if is_task_corpus(cfg.corpus):
        if cfg.limit is not None or world > 1:
            raise PipelineError(
                "a glue: corpus is embedded whole, in one process: drop --limit and torchrun"
            )
        # Read and check every split now, before the teacher loads or --out is touched.
        task = load_task_corpus(cfg.corpus, cfg.glue_dir)
        cfg.augment.check(task.task)
        corpus_info = {"task": task.describe()}
        if cfg.augment.copies:
            corpus_info["augmentation"] = cfg.augment.describe(task.task)
    else:
        stats = CorpusStats()
        # Pull one sentence now: a missing, empty or unreachable corpus fails before the
        # teacher loads and before the output directory is touched. The reader process
        # streams it again.
        if next(iter_sentences(spec, cfg.filters, cfg.limit, stats), None) is None:
            raise PipelineError(
                f"corpus {cfg.corpus!r} gave no sentences after filtering "
                f"({_stats_line(stats)}); check the path, --text-field and the length filters"
            )
        corpus_info = describe_corpus(spec) | {
            "filters": describe_filters(cfg.filters),
            "limit": cfg.limit,
        }

    teacher = Teacher(
        cfg.teacher,
        cfg.poolings,
        cfg.max_length,
        cfg.dtype,
        cfg.device,
        cfg.trust_remote_code,
        compile=cfg.compile,
        logits=cfg.logits,
    )
    if task is not None and cfg.logits:
        _check_logits_teacher(teacher, task)
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
        if task is not None and cfg.augment.copies:
            # Only now: a complete cache needs no variants (the fingerprint already covers
            # the augmentation config), and building them takes a while on large tasks.
            task = _augment(task, teacher, cfg.augment)
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
            sentences=task.sentences if task is not None else None,
        )
        with EmbedProgress(total, done=writer.resumed_rows, enabled=cfg.progress) as progress:
            stats = _run(read_windows(plan), teacher, writer, budget, cfg.normalize, progress)
        seconds = time.monotonic() - t0
        if task is not None:
            _write_task_files(writer, task, teacher if cfg.logits else None, budget)
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
                table = _encode_window(window, teacher, budget, normalize, writer.schema)
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


def _encode_window(
    window: Window, teacher: Teacher, budget: int, normalize: bool, schema: pa.Schema
) -> pa.Table:
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


def _write_task_files(
    writer: CacheWriter, task: TaskCorpus, teacher: Teacher | None, budget: int
) -> None:
    """The examples of each split, once every sentence they point at is in the cache; then the
    teacher's logits per split (each split's file is a resume point); task.json last."""
    writer.flush()
    assert writer.manifest is not None
    rows = writer.manifest.num_rows
    if rows != len(task.sentences):  # ids are positions in task.sentences: all must be there
        raise PipelineError(
            f"{writer.path} holds {rows:,} of the task's {len(task.sentences):,} sentences; "
            "rerun the same command to resume"
        )
    if teacher is not None:
        task.extra["logits"] = {
            "teacher": teacher.name,
            "finetuning_task": teacher.finetuning_task or task.task.name,
            "num_labels": teacher.num_labels,
            "splits": list(task.examples),
        }
    files = task.side_files()
    for name, data in files.items():
        if name != TASK_NAME:
            writer.put_file(name, data)
    if teacher is not None:
        for split, examples in task.examples.items():
            if logits_name(split) in writer.manifest.files:
                continue  # written before an interruption; the fingerprint vouches for it
            t0 = time.monotonic()
            writer.put_file(logits_name(split), logits_bytes(_logits(teacher, examples, budget)))
            _log(f"{split}: logits of {len(examples):,} examples in {time.monotonic() - t0:.0f} s")
    writer.put_file(TASK_NAME, files[TASK_NAME])


def _logits(teacher: Teacher, examples: list[Example], budget: int) -> np.ndarray:
    """The fine-tuned teacher's logits per example; a pair is one sequence, as in fine-tuning."""
    if examples and examples[0].text_b is not None:
        encodings = teacher.backend.encode_batch([(e.text_a, e.text_b) for e in examples])
    else:
        encodings = teacher.backend.encode_batch([e.text_a for e in examples])
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int32)
    out = np.zeros((len(examples), teacher.num_labels), np.float32)
    for idx in budget_batches(lengths, budget):
        batch = [encodings[k] for k in idx]
        out[idx] = teacher.logits([e.ids for e in batch], [e.type_ids for e in batch])
    return out


def _check_logits_teacher(teacher: Teacher, task: TaskCorpus) -> None:
    """Logits only mean something from a teacher fine-tuned on this task's label set."""
    spec = task.task
    if teacher.num_labels != spec.num_labels:
        raise PipelineError(
            f"teacher {teacher.name!r} has {teacher.num_labels} output labels but {spec.name} "
            f"has {spec.num_labels}: fine-tune a teacher on {spec.name} with "
            f"`pipeline teacher-finetune --task {spec.name}`"
        )
    made_for = teacher.finetuning_task
    if made_for and not same_task(made_for, spec):
        raise PipelineError(
            f"teacher {teacher.name!r} was fine-tuned on {made_for!r}, not {spec.name}: its "
            f"logits would be another task's; use a teacher fine-tuned on {spec.name}"
        )


def _augment(task: TaskCorpus, teacher: Teacher, cfg: AugmentConfig) -> TaskCorpus:
    """The task plus augmented training examples (pipeline/augment.py), deterministic by seed."""
    train = task.examples["train"]
    neighbours = None
    if "replace" in cfg.resolved_modes(task.task):
        words = (w for e in train for t in (e.text_a, e.text_b or "") for w in t.split())
        neighbours = Neighbours(
            teacher.backend.get_vocab(with_added_tokens=False),
            teacher.embedding_matrix(),
            words,
            cfg.neighbours,
            list(teacher.special_ids.values()),
        )
    mask_id = teacher.special_ids.get("mask")
    mask = teacher.backend.id_to_token(mask_id) if mask_id is not None else "[MASK]"
    augmented = augment_examples(train, task.task, cfg, neighbours, mask)
    _log(f"augmentation: {len(augmented):,} variants of {len(train):,} training examples")
    return task.with_augmented(augmented, cfg.describe(task.task))


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
