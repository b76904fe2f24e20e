"""Stage two: train the BiLSTM student to reproduce the teacher's sentence vectors.

The teacher never runs here: the stage-one cache holds its token ids and sentence vectors, and
the student learns to map the first to the second (sentence representation approximation, Wu
et al. 2020). ``train(TrainConfig(cache=..., out=...))`` reads top to bottom:

    setup      processes (torchrun or not), device, the cache, the student's shape
    data       TrainData (per-rank, per-worker shards) + held-out validation batches
    model      BiLSTMEncoder (+ teacher-embedding init), AdamW, bf16 autocast
    run folder refuse a different run; find the checkpoint to resume
    resume     weights, optimiser, RNG and data position from RUN/checkpoint
    loop       loss = MSE (+ cosine term), warmup + decay, clipping, logs, evals, checkpoints
    finish     StudentEncoder.save_pretrained(RUN)

A run folder holds ``run.json`` (the config and its fingerprint), ``metrics.jsonl``,
``checkpoint/`` while training, and finally the student (``config.json``,
``model.safetensors``, ``tokenizer.json``). Checkpoints are safetensors + JSON only, written
to a temporary folder and renamed into place, so a kill at any moment leaves the last complete
one; resuming from it ends with the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from cache import Cache, CacheError, open_cache
from cache.files import fsync_dir, write_atomic, write_file
from student.config import POOLINGS, StudentConfig
from student.data import (
    Batch,
    DataConfig,
    DataPosition,
    TrainData,
    check_trainable,
    compute_split,
    validation_batches,
)
from student.encoder import StudentEncoder, _cpu_bf16_supported
from student.errors import StudentError
from student.model import BiLSTMEncoder, pca_project

RUN_FORMAT = "sra-train-run"
CHECKPOINT_FORMAT = "sra-train-checkpoint"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
LATEST_FILE = "latest.json"
# What --overwrite may delete in a run folder: our own files, never anything else.
RUN_FILES = (
    RUN_FILE,
    METRICS_FILE,
    CHECKPOINT_DIR,
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "report.md",
    "loss.png",
    "fidelity.png",
)


@dataclass
class TrainConfig:
    """Everything ``pipeline train`` takes; the CLI is a thin layer over this."""

    cache: Path
    out: Path
    pooling: str = "mean"  # which teacher vectors (cache column) to approximate
    # Student shape (see StudentConfig for why these defaults).
    hidden_size: int = 300
    embedding_dim: int = 300
    layers: int = 1
    student_pooling: str = "max"
    dropout: float = 0.1
    init_embeddings: str = "teacher"  # teacher: PCA of the teacher's token embeddings
    # Data.
    batch_size: int = 256
    token_budget: int = 8192
    shuffle_buffer: int = 100_000
    val_fraction: float = 0.01
    val_max_rows: int = 2000
    workers: int = 0
    # Optimisation. epochs=None means 1, or as many as --max-steps needs when that is given.
    epochs: int | None = None
    max_steps: int | None = None
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: float = 0.03  # share of all steps spent warming up linearly
    decay: str = "cosine"  # cosine | linear | constant
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    cos_weight: float = 0.0  # loss = MSE + cos_weight * (1 - cosine)
    normalize_targets: bool = False
    bf16: bool | None = None  # None: where the hardware runs bf16 natively
    seed: int = 0
    # Bookkeeping; these do not change the weights.
    device: str = "auto"
    eval_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


def train(cfg: TrainConfig) -> Path:
    """Train a student from a cache into ``cfg.out``; returns the run folder."""
    cfg.cache, cfg.out = Path(cfg.cache), Path(cfg.out)
    _check_options(cfg)
    dist = Dist.start(cfg.device)
    try:
        return _train(cfg, dist)
    finally:
        dist.stop()


def _train(cfg: TrainConfig, dist: Dist) -> Path:
    # -- setup: the cache and the student's shape ---------------------------------------------
    cache = open_cache(cfg.cache)
    check_trainable(cache, cfg.pooling)
    tokenizer = _cache_tokenizer(cache)
    student_cfg = _student_config(cfg, cache, tokenizer)
    bf16 = _resolve_bf16(cfg.bf16, dist.device)
    data_cfg = DataConfig(
        pooling=cfg.pooling,
        token_budget=cfg.token_budget,
        batch_size=cfg.batch_size,
        shuffle_buffer=cfg.shuffle_buffer,
        val_fraction=cfg.val_fraction,
        val_max_rows=cfg.val_max_rows,
        seed=cfg.seed,
    )

    # -- data: everything is read and checked before the run folder is touched ---------------
    split = compute_split(cache, data_cfg)
    if split.train_rows < 1:
        raise StudentError(f"cache {cache.path} leaves no training rows; lower --val-fraction")
    pad_id = student_cfg.pad_id
    data = TrainData(
        cache,
        data_cfg,
        split,
        pad_id=pad_id,
        rank=dist.rank,
        world_size=dist.world,
        workers=cfg.workers,
    )
    val = validation_batches(cache, data_cfg, split, pad_id)
    steps_in = StepCounter(data, dist)
    total = steps_in.total(cfg.epochs, cfg.max_steps)
    warmup_steps = max(1, round(cfg.warmup * total)) if cfg.warmup > 0 else 0

    # -- model, optimiser --------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = BiLSTMEncoder(student_cfg)
    if cfg.init_embeddings == "teacher":
        model.init_embeddings(_teacher_embeddings(cache, student_cfg, cfg.seed))
    model.to(dist.device)
    # Dropout masks differ between ranks, as they would for different examples.
    torch.manual_seed(cfg.seed + 1 + dist.rank)
    optimizer = _optimizer(model, cfg)
    autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=bf16)

    # -- the run folder: refuse another run's folder, find the checkpoint to resume -----------
    identity = _identity(cfg, cache, student_cfg, data_cfg, bf16, dist.world)
    fingerprint = _hash(identity)
    run = RunDir(cfg.out, dist)
    checkpoint = run.prepare(fingerprint, identity, cfg)
    if checkpoint is RunDir.COMPLETE:
        _log(dist, f"{cfg.out} already holds this finished run; nothing to do")
        return cfg.out

    # -- resume ------------------------------------------------------------------------------
    step, epoch, epoch_step, position = 0, 0, 0, DataPosition([0] * data.streams)
    if checkpoint is not None:
        step, epoch, epoch_step, position = load_checkpoint(checkpoint, model, optimizer, dist)
        _log(dist, f"resuming {cfg.out} at step {step:,} (epoch {epoch}, batch {epoch_step:,})")
    run.trim_metrics(step)
    ddp = dist.wrap(model)

    # -- the loop ----------------------------------------------------------------------------
    meter = Meter(run, dist, total, cfg.progress, cfg.log_every)
    _log(
        dist,
        f"training on {dist.device} x{dist.world}{' bf16' if bf16 else ''}: "
        f"{split.train_rows:,} rows ({split.held_out:,} held out, {len(val)} val batches), "
        f"{total:,} steps",
    )
    with meter:
        while step < total:
            if steps_in(epoch) == 0:
                raise StudentError(f"epoch {epoch} gives no training batches on some rank")
            data.set_epoch(epoch, position)
            for batch in _batches(data, cfg.workers, cfg.seed, epoch):
                if epoch_step >= steps_in(epoch) or step >= total:
                    break
                lr = lr_at(step, total, warmup_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                b = batch.to(dist.device)
                targets = F.normalize(b.targets, dim=-1) if cfg.normalize_targets else b.targets
                with autocast:
                    pred = ddp(b.input_ids, b.lengths)
                pred = pred.float()
                mse = F.mse_loss(pred, targets)
                cos = F.cosine_similarity(pred, targets, dim=-1).mean()
                loss = mse + cfg.cos_weight * (1 - cos) if cfg.cos_weight else mse
                # Every rank must agree on stopping, so the check uses the all-reduced value.
                loss_value, cos_value, sentences = dist.sum(
                    [loss.detach(), cos.detach(), float(len(batch))]
                )
                loss_value, cos_value = loss_value / dist.world, cos_value / dist.world
                if not math.isfinite(loss_value):
                    raise _non_finite("loss", loss_value, step, lr, run)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                if not math.isfinite(grad_norm):
                    raise _non_finite("gradient norm", grad_norm, step, lr, run)
                optimizer.step()

                step += 1
                epoch_step += 1
                position.advance(batch, data.streams)
                tokens = int(batch.lengths.sum()) * dist.world  # about: ranks see similar rows
                meter.train(step, epoch, loss_value, cos_value, lr, int(sentences), tokens)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                    with meter.paused():
                        meter.val(step, epoch, evaluate(model, val, dist, autocast, cfg))
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                    state = TrainState(step, epoch, epoch_step, position)
                    with meter.paused():
                        save_checkpoint(run, model, optimizer, state, fingerprint, dist)
            if step < total:
                epoch, epoch_step = epoch + 1, 0
                position = DataPosition([0] * data.streams)
        with meter.paused():
            meter.val(step, epoch, evaluate(model, val, dist, autocast, cfg))

    # -- finish ------------------------------------------------------------------------------
    if dist.rank == 0:
        model.to("cpu").eval()
        StudentEncoder(student_cfg, model, tokenizer=tokenizer).save_pretrained(cfg.out)
        run.finish(meter.summary(step, epoch))
    dist.barrier()
    _log(dist, f"{cfg.out}: student saved ({step:,} steps, {meter.summary_line()})")
    return cfg.out


# =============================================================================== the pieces


def lr_at(step: int, total: int, warmup_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine or linear decay to ``lr * min_lr_ratio``."""
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    if cfg.decay == "constant":
        return cfg.lr
    progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.decay == "linear":
        return cfg.lr - (cfg.lr - floor) * progress
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(
    model: BiLSTMEncoder,
    batches: list[Batch],
    dist: Dist,
    autocast: torch.autocast,
    cfg: TrainConfig,
) -> dict[str, float]:
    """MSE and mean cosine to the teacher on the held-out rows (ranks split the batches)."""
    model.eval()
    sse = cos = rows = 0.0
    try:
        for batch in batches[dist.rank :: dist.world]:
            b = batch.to(dist.device)
            targets = F.normalize(b.targets, dim=-1) if cfg.normalize_targets else b.targets
            with autocast:
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


def _batches(data: TrainData, workers: int, seed: int, epoch: int) -> Iterator[Batch]:
    if workers == 0:
        return iter(data)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        num_workers=workers,
        # Its own generator: DataLoader otherwise draws worker seeds from the global RNG,
        # which would shift the dropout masks of a resumed run.
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch),
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
        if epochs is None and max_steps is not None:
            return max_steps
        total = sum(self(e) for e in range(epochs or 1))
        if total < 1:
            raise StudentError("the cache gives no training batches; use a larger cache")
        return min(total, max_steps) if max_steps is not None else total


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay on matrices only; biases are offsets, decaying them only hurts.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        # The fused kernel is ~7x faster than the default on CPU, where the optimiser step
        # over the 9M-entry embedding table is otherwise a fifth of the training step.
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def _non_finite(what: str, value: float, step: int, lr: float, run: RunDir) -> StudentError:
    last = run.latest_step()
    kept = f"the last good checkpoint (step {last:,}) is kept" if last else "no checkpoint yet"
    return StudentError(
        f"non-finite {what} ({value}) at step {step + 1:,} (lr {lr:.2e}); stopped, {kept}; "
        "lower --lr or try --no-bf16, then rerun with --resume (or --overwrite)"
    )


# ============================================================================ setup helpers


def _check_options(cfg: TrainConfig) -> None:
    problems = []
    if cfg.student_pooling not in POOLINGS:
        problems.append(f"--student-pooling must be one of {', '.join(POOLINGS)}")
    if cfg.init_embeddings not in ("random", "teacher"):
        problems.append("--init-embeddings must be random or teacher")
    if cfg.decay not in ("cosine", "linear", "constant"):
        problems.append("--decay must be cosine, linear or constant")
    if cfg.epochs is not None and cfg.epochs < 1:
        problems.append("--epochs must be >= 1")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        problems.append("--max-steps must be >= 1")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        problems.append("--lr must be a positive number")
    if min(cfg.batch_size, cfg.token_budget, cfg.hidden_size, cfg.embedding_dim, cfg.layers) < 1:
        problems.append("--batch-size, --token-budget and the student sizes must be >= 1")
    if not 0 <= cfg.val_fraction < 0.5:
        problems.append("--val-fraction must be in [0, 0.5)")
    if cfg.workers < 0 or cfg.cos_weight < 0 or cfg.grad_clip <= 0 or not 0 <= cfg.warmup < 1:
        problems.append("--workers, --cos-weight >= 0, --grad-clip > 0, 0 <= --warmup < 1")
    if cfg.resume and cfg.overwrite:
        problems.append("--resume and --overwrite contradict each other; pass one")
    if problems:
        raise StudentError("; ".join(problems))


def _cache_tokenizer(cache: Cache) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(cache.tokenizer_path))
    except Exception:
        raise CacheError(
            f"cache {cache.path} has no readable tokenizer.json, which the student ships with; "
            "re-create the cache with `pipeline embed`"
        ) from None


def _student_config(cfg: TrainConfig, cache: Cache, tokenizer: Tokenizer) -> StudentConfig:
    teacher = cache.manifest.config.get("teacher", {})
    vocab = max(
        int(teacher.get("vocab_size") or 0), tokenizer.get_vocab_size(with_added_tokens=True)
    )
    try:
        return StudentConfig(
            vocab_size=vocab,
            embedding_dim=cfg.embedding_dim,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.layers,
            pooling=cfg.student_pooling,
            dropout=cfg.dropout,
            output_dim=cache.dim,
            pad_id=int(teacher.get("special_ids", {}).get("pad", 0)),
            max_length=int(teacher.get("max_length", 128)),
            teacher=str(teacher.get("name", "")),
            teacher_pooling=cfg.pooling,
            cache_fingerprint=cache.manifest.fingerprint,
        )
    except ValueError as e:
        raise StudentError(f"bad student options: {e}") from None


def _teacher_embeddings(cache: Cache, student_cfg: StudentConfig, seed: int) -> torch.Tensor:
    """The teacher's input embeddings, PCA-projected to the student's embedding size."""
    import safetensors.numpy

    path = cache.embeddings_path
    try:
        matrix = safetensors.numpy.load_file(str(path))["word_embeddings"]
    except Exception:
        raise CacheError(
            f"cache {cache.path} has no readable embeddings.safetensors (word_embeddings); "
            "pass --init-embeddings random or re-create the cache"
        ) from None
    if matrix.shape[0] != student_cfg.vocab_size:
        raise CacheError(
            f"{path} has {matrix.shape[0]} rows but the vocabulary has "
            f"{student_cfg.vocab_size}; the cache is inconsistent, pass --init-embeddings random"
        )
    return pca_project(matrix, student_cfg.embedding_dim, seed=seed)


def _resolve_bf16(bf16: bool | None, device: torch.device) -> bool:
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if bf16 and not supported:
            raise StudentError("this GPU has no bf16; pass --no-bf16")
        return supported if bf16 is None else bf16
    # On CPU bf16 autocast helps only where the hardware has bf16 matmuls (avx512_bf16/AMX).
    return _cpu_bf16_supported() if bf16 is None else bf16


def _identity(
    cfg: TrainConfig,
    cache: Cache,
    student_cfg: StudentConfig,
    data_cfg: DataConfig,
    bf16: bool,
    world: int,
) -> dict[str, Any]:
    """Everything that decides the trained weights; its hash is the run's fingerprint."""
    return {
        "cache": {"fingerprint": cache.manifest.fingerprint, "rows": cache.num_rows},
        "student": student_cfg.to_dict(),
        "data": dataclasses.asdict(data_cfg),
        "optim": {
            k: getattr(cfg, k)
            for k in (
                "epochs",
                "max_steps",
                "lr",
                "min_lr_ratio",
                "warmup",
                "decay",
                "weight_decay",
                "grad_clip",
                "cos_weight",
                "normalize_targets",
                "init_embeddings",
                "seed",
            )
        },
        "bf16": bf16,
        # The batch order depends on how the rows are dealt out to processes and workers.
        "layout": {"world_size": world, "workers": cfg.workers},
    }


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for k in sorted(set(old) | set(new)):
            keys += _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return keys
    return [] if old == new else [prefix.rstrip(".")]


def _log(dist: Dist, message: str) -> None:
    if dist.rank == 0:
        print(message, file=sys.stderr, flush=True)


# ====================================================================== processes (DDP)


class Dist:
    """This process's place in a torchrun job (or a job of one), and the few collectives used."""

    def __init__(self, rank: int, world: int, local_rank: int, device: torch.device) -> None:
        self.rank = rank
        self.world = world
        self.local_rank = local_rank
        self.device = device

    @classmethod
    def start(cls, device: str) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        if world < 1 or not 0 <= rank < world:
            raise StudentError(f"bad RANK={rank} / WORLD_SIZE={world} in the environment")
        if device not in ("auto", "cpu", "cuda"):
            raise StudentError(f"--device must be auto, cpu or cuda, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise StudentError("--device cuda but no CUDA GPU is visible; use --device cpu")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(dev)
        if world > 1:
            import datetime

            import torch.distributed as td

            if "OMP_NUM_THREADS" not in os.environ:
                # Ranks share the machine's cores; oversubscribed threads slow all of them.
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
            if not td.is_initialized():
                td.init_process_group(
                    "nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2)
                )
        return cls(rank, world, local_rank, dev)

    def stop(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _reduce(self, values: list[Any], op: str) -> list[float]:
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()) for v in values])
        if self.world > 1:
            import torch.distributed as td

            t = t.to(self.device)
            td.all_reduce(t, op=td.ReduceOp.SUM if op == "sum" else td.ReduceOp.MIN)
        return t.cpu().tolist()

    def sum(self, values: list[Any]) -> list[float]:
        return self._reduce([v.detach().cpu() if torch.is_tensor(v) else v for v in values], "sum")

    def min(self, value: float) -> float:
        return self._reduce([value], "min")[0]

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped tensor (CPU), in rank order."""
        if self.world == 1:
            return [tensor.cpu()]
        import torch.distributed as td

        t = tensor.to(self.device)
        parts = [torch.empty_like(t) for _ in range(self.world)]
        td.all_gather(parts, t)
        return [p.cpu() for p in parts]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()


# ============================================================================ the run folder


class RunDir:
    """The output folder: refuses foreign or different runs, resumes the same one."""

    COMPLETE = object()  # prepare(): the run is already finished

    def __init__(self, path: Path, dist: Dist) -> None:
        self.path = path
        self.dist = dist
        self.ckpt = path / CHECKPOINT_DIR

    def prepare(self, fingerprint: str, identity: dict[str, Any], cfg: TrainConfig) -> Any:
        """Check the folder against this config; returns the checkpoint folder to resume
        from, None to start fresh, or COMPLETE. Every rank checks; only rank 0 writes."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise StudentError(f"--out {path} is a file; choose a folder")
        existing = self._read_run()
        foreign = existing is None and path.exists() and any(path.iterdir())
        self.dist.barrier()  # every rank has looked before rank 0 changes anything
        if foreign:
            raise StudentError(
                f"--out {path} is not empty and holds no {RUN_FILE}, so it is not a training "
                "run; choose a new or empty folder"
            )
        if existing is not None and existing.get("fingerprint") != fingerprint:
            changed = _changed_keys(existing.get("config", {}), identity)
            what = ", ".join(changed[:6]) or "fingerprint"
            if cfg.overwrite:
                self._clear()
                existing = None
            elif cfg.resume:
                raise StudentError(
                    f"cannot --resume {path}: its checkpoint is from a different config "
                    f"(differs in: {what}); rerun with the original options, or --overwrite "
                    "to start over"
                )
            else:
                raise StudentError(
                    f"{path} holds a different run (differs in: {what}); pass --overwrite to "
                    "replace it or choose another --out"
                )
        if existing is not None and cfg.overwrite:
            self._clear()
            existing = None
        if existing is not None:
            finished = existing.get("status") == "complete"
            if not cfg.resume:
                state = "finished" if finished else "unfinished"
                hint = "" if finished else "--resume to continue it or "
                raise StudentError(
                    f"{path} already holds {'a' if finished else 'an'} {state} run with this "
                    f"config; pass {hint}"
                    "--overwrite to train it again"
                )
            if finished:
                return self.COMPLETE
            checkpoint = self.latest()
            if checkpoint is not None:
                state = json.loads((checkpoint / "state.json").read_text())
                if state.get("fingerprint") != fingerprint:
                    raise StudentError(
                        f"cannot --resume: {checkpoint} belongs to a different config; "
                        "pass --overwrite to start over"
                    )
            elif self.dist.rank == 0:
                print(f"{path}: no checkpoint yet; starting from step 0", file=sys.stderr)
            self.dist.barrier()
            return checkpoint
        if self.dist.rank == 0:
            path.mkdir(parents=True, exist_ok=True)
            run = {
                "format": RUN_FORMAT,
                "format_version": 1,
                "fingerprint": fingerprint,
                "status": "training",
                "cache": str(cfg.cache.resolve()),
                "config": identity,
                "options": {
                    k: str(v) if isinstance(v, Path) else v
                    for k, v in dataclasses.asdict(cfg).items()
                },
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_atomic(path / RUN_FILE, _json_bytes(run))
        self.dist.barrier()
        return None

    def _read_run(self) -> dict[str, Any] | None:
        p = self.path / RUN_FILE
        if not p.is_file():
            return None
        try:
            run = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise StudentError(f"{p} is unreadable ({e}); pass --overwrite to start over") from None
        if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
            raise StudentError(f"{p} is not a training-run file; choose another --out")
        return run

    def _clear(self) -> None:
        if self.dist.rank != 0:
            return
        for name in RUN_FILES:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The last committed checkpoint folder, if any."""
        try:
            name = json.loads((self.ckpt / LATEST_FILE).read_text())["dir"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        p = self.ckpt / str(name)
        return p if "/" not in str(name) and (p / "state.json").is_file() else None

    def latest_step(self) -> int:
        latest = self.latest()
        if latest is None:
            return 0
        return int(json.loads((latest / "state.json").read_text()).get("step", 0))

    def trim_metrics(self, step: int) -> None:
        """Drop metric lines past ``step``: a killed run logged steps the resume redoes."""
        p = self.path / METRICS_FILE
        if self.dist.rank != 0 or not p.exists():
            return
        kept = []
        for line in p.read_text().splitlines():
            with contextlib.suppress(ValueError):
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
        write_atomic(p, ("\n".join(kept) + "\n" if kept else "").encode())

    def finish(self, summary: dict[str, Any]) -> None:
        run = self._read_run() or {}
        run.update(
            status="complete",
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            summary=summary,
        )
        write_atomic(self.path / RUN_FILE, _json_bytes(run))
        # The student is saved; the optimiser state is no longer needed.
        shutil.rmtree(self.ckpt, ignore_errors=True)


# ============================================================================== checkpoints


@dataclass
class TrainState:
    step: int
    epoch: int
    epoch_step: int
    position: DataPosition


def save_checkpoint(
    run: RunDir,
    model: BiLSTMEncoder,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    fingerprint: str,
    dist: Dist,
) -> None:
    """Write RUN/checkpoint/step-N/ atomically, then point latest.json at it.

    Weights, optimiser moments and RNG states go to safetensors, everything else to JSON;
    loading never unpickles anything. Each rank's RNG state and data position are gathered so
    rank 0 alone writes.
    """
    rng = {f"torch.rank{r}": t for r, t in enumerate(dist.gather(torch.get_rng_state()))}
    if dist.device.type == "cuda":
        cuda = dist.gather(torch.cuda.get_rng_state(dist.device))
        rng |= {f"cuda.rank{r}": t for r, t in enumerate(cuda)}
    streams = len(state.position.consumed)
    pos = torch.tensor([*state.position.consumed, state.position.next_stream], dtype=torch.int64)
    positions = [p.tolist() for p in dist.gather(pos)]
    if dist.rank != 0:
        return
    opt_tensors, opt_meta = _optimizer_files(optimizer)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "fingerprint": fingerprint,
        "step": state.step,
        "epoch": state.epoch,
        "epoch_step": state.epoch_step,
        "data": [{"consumed": p[:streams], "next_stream": p[streams]} for p in positions],
        "optimizer": opt_meta,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    files = {
        "model.safetensors": safetensors.torch.save(weights),
        "optimizer.safetensors": safetensors.torch.save(opt_tensors),
        "rng.safetensors": safetensors.torch.save(rng),
        "state.json": _json_bytes(meta),  # written last: its presence marks a whole folder
    }
    name = f"step-{state.step:09d}"
    run.ckpt.mkdir(parents=True, exist_ok=True)
    tmp = run.ckpt / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for fname, data in files.items():
        write_file(tmp / fname, data)
    fsync_dir(tmp)
    _commit_checkpoint(run.ckpt, tmp, name)


def _commit_checkpoint(folder: Path, tmp: Path, name: str) -> None:
    """Rename the finished folder into place, repoint latest.json, drop older checkpoints."""
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(folder)
    write_atomic(folder / LATEST_FILE, _json_bytes({"dir": name}))
    for p in folder.iterdir():
        if p.name not in (name, LATEST_FILE):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def load_checkpoint(
    folder: Path, model: BiLSTMEncoder, optimizer: torch.optim.Optimizer, dist: Dist
) -> tuple[int, int, int, DataPosition]:
    """Restore weights, optimiser, this rank's RNG; return (step, epoch, epoch_step, position)."""
    try:
        meta = json.loads((folder / "state.json").read_text())
        weights = safetensors.torch.load_file(str(folder / "model.safetensors"))
        opt_tensors = safetensors.torch.load_file(str(folder / "optimizer.safetensors"))
        rng = safetensors.torch.load_file(str(folder / "rng.safetensors"))
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(_optimizer_state(opt_tensors, meta["optimizer"], dist.device))
        torch.set_rng_state(rng[f"torch.rank{dist.rank}"])
        if dist.device.type == "cuda" and f"cuda.rank{dist.rank}" in rng:
            torch.cuda.set_rng_state(rng[f"cuda.rank{dist.rank}"], dist.device)
        data = meta["data"][dist.rank]
        position = DataPosition(list(data["consumed"]), int(data["next_stream"]))
        return int(meta["step"]), int(meta["epoch"]), int(meta["epoch_step"]), position
    except (OSError, ValueError, KeyError, IndexError, RuntimeError) as e:
        first = " ".join(str(e).split())[:200]
        raise StudentError(
            f"checkpoint {folder} is unreadable ({first}); pass --overwrite to start over"
        ) from None


def _optimizer_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        # AdamW keeps `step` on the CPU unless capturable; the moments live with the weights.
        state.setdefault(int(pid), {})[name] = value if name == "step" else value.to(device)
    for key, value in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


# ====================================================================== metrics and progress


class Meter:
    """metrics.jsonl lines, and progress: a rich bar on a terminal, plain lines otherwise."""

    def __init__(self, run: RunDir, dist: Dist, total: int, progress: bool, log_every: int) -> None:
        self.run = run
        self.dist = dist
        self.total = total
        self.enabled = progress and dist.rank == 0
        self.every = 30.0  # seconds between plain log lines
        self.log_every = max(1, log_every)
        self._start = self._last_log = self._mark = time.perf_counter()
        self._window: list[tuple[float, float]] = []
        self._sentences = self._tokens = 0
        self._run_sentences = 0
        self._paused = 0.0  # seconds spent validating and checkpointing
        self._last_train: dict[str, Any] = {}
        self._last_val: dict[str, Any] = {}
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Meter:
        from rich.console import Console

        console = Console(stderr=True)
        if self.enabled and console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self._bar.__enter__()
            done = self.run.latest_step()
            self._task = self._bar.add_task("train", total=self.total, completed=done, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _write(self, record: dict[str, Any]) -> None:
        if self.dist.rank != 0:
            return
        with open(self.run.path / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def train(
        self,
        step: int,
        epoch: int,
        loss: float,
        cos: float,
        lr: float,
        sentences: int,
        tokens: int,
    ) -> None:
        self._window.append((loss, cos))
        self._sentences += sentences
        self._tokens += tokens
        self._run_sentences += sentences
        if step % self.log_every and step != self.total:
            return
        now = time.perf_counter()
        seconds = max(now - self._mark, 1e-9)
        self._last_train = {
            "step": step,
            "epoch": epoch,
            "loss": float(np.mean([w[0] for w in self._window])),
            "train_cos": float(np.mean([w[1] for w in self._window])),
            "lr": lr,
            "sentences_per_s": round(self._sentences / seconds, 1),
            "tokens_per_s": round(self._tokens / seconds, 1),
            "elapsed_s": round(now - self._start, 2),
        }
        self._write(self._last_train)
        self._window, self._sentences, self._tokens, self._mark = [], 0, 0, now
        self._show(step)

    def val(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        self._last_val = {"step": step, "epoch": epoch, **metrics}
        self._write(self._last_val)
        self._show(step, force=True)

    def _line(self) -> str:
        t, v = self._last_train, self._last_val
        parts = []
        if t:
            parts += [
                f"loss {t['loss']:.4g}",
                f"lr {t['lr']:.2e}",
                f"{t['sentences_per_s']:,.0f} sent/s",
            ]
        if v:
            parts.append(f"val cos {v['val_cos']:.4f}")
        return " · ".join(parts)

    def _show(self, step: int, force: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=self._line())
            return
        now = time.perf_counter()
        if force or now - self._last_log >= self.every:
            self._last_log = now
            print(f"train: step {step:,}/{self.total:,} · {self._line()}", file=sys.stderr)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent here (validation, checkpoints) does not count in sentences/s."""
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self._mark += spent
            self._paused += spent

    def summary(self, step: int, epoch: int) -> dict[str, Any]:
        seconds = time.perf_counter() - self._start
        training = max(seconds - self._paused, 1e-9)
        return {
            "steps": step,
            "epochs": epoch + 1,
            "seconds_this_run": round(seconds, 1),
            "sentences_per_s": round(self._run_sentences / training, 1),
            **{k: v for k, v in self._last_val.items() if k.startswith("val_")},
            "final_loss": self._last_train.get("loss"),
        }

    def summary_line(self) -> str:
        v = self._last_val
        if not v:
            return "no validation rows"
        return f"val cos {v['val_cos']:.4f}, val mse {v['val_mse']:.4g}"
