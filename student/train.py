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

The pieces it leans on live beside it: ``student.dist`` (processes and collectives),
``student.checkpoint`` (the run folder, checkpoints, exact resume) and ``student.meter``
(metrics.jsonl and progress).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from cache import Cache, CacheError, open_cache
from cache.errors import SraError
from student.checkpoint import RunDir, TrainState, load_checkpoint, save_checkpoint
from student.config import POOLINGS, StudentConfig
from student.data import (
    Batch,
    DataConfig,
    DataPosition,
    TrainData,
    check_trainable,
    compute_split,
    target_dim,
    validation_batches,
)
from student.dist import Dist
from student.encoder import StudentEncoder, cpu_bf16_supported
from student.lm import BiLMHead, StudentWithLM, sampling_distribution, unigram_counts
from student.meter import Meter
from student.model import BiLSTMEncoder, pca_project
from student.realfake import (
    EDITS,
    TOKEN_RATE,
    RealFakeHead,
    StudentWithRF,
    StudentWithTokenRF,
    TokenRFHead,
    corrupt,
    replace_tokens,
    token_kinds,
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
    projection_hidden: int = 0  # 0: a linear projection; N: an MLP with N hidden units
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
    # A bi-LM beside distillation (student.lm): loss += lm_weight * sampled-softmax CE.
    lm_weight: float = 0.0
    lm_samples: int = 256  # shared negatives per batch; each costs time on every token
    # Real vs corrupted sentences (student.realfake): loss += rf_weight * logistic loss.
    rf_weight: float = 0.0
    # sentence: one edited copy per sentence, one head on the pooled vector; token: replaced
    # words, a head on every token's state (replaced-token detection).
    rf_level: str = "sentence"
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
    tokenizer = cache_tokenizer(cache)
    student_cfg = student_config(cfg, cache, tokenizer)
    bf16 = resolve_bf16(cfg.bf16, dist.device)
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
        raise SraError(f"cache {cache.path} leaves no training rows; lower --val-fraction")
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
    # With --lm-weight or --rf-weight the network trained (and checkpointed) is the student
    # plus a head for that objective; only the student is validated and saved.
    net: torch.nn.Module = model
    if cfg.lm_weight:
        probs = sampling_distribution(unigram_counts(cache, student_cfg.vocab_size), pad_id)
        net = StudentWithLM(model, BiLMHead(model, probs, cfg.lm_samples))
    if cfg.rf_weight:
        kinds = token_kinds(tokenizer, student_cfg.vocab_size)
        if cfg.rf_level == "token":
            net = StudentWithTokenRF(model, TokenRFHead(model))
        else:
            net = StudentWithRF(model, RealFakeHead(model))
    net.to(dist.device)
    # Dropout masks differ between ranks, as they would for different examples.
    torch.manual_seed(cfg.seed + 1 + dist.rank)
    optimizer = _optimizer(net, cfg)
    autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=bf16)

    # -- the run folder: refuse another run's folder, find the checkpoint to resume -----------
    identity = _identity(cfg, cache, student_cfg, data_cfg, bf16, dist.world)
    fingerprint = _hash(identity)
    run = RunDir(cfg.out, dist)
    checkpoint = run.prepare(
        fingerprint,
        identity,
        cache=cfg.cache,
        options=_options(cfg),
        resume=cfg.resume,
        overwrite=cfg.overwrite,
    )
    if checkpoint is RunDir.COMPLETE:
        _log(dist, f"{cfg.out} already holds this finished run; nothing to do")
        return cfg.out

    # -- resume ------------------------------------------------------------------------------
    step, epoch, epoch_step, position = 0, 0, 0, DataPosition([0] * data.streams)
    if checkpoint is not None:
        step, epoch, epoch_step, position = load_checkpoint(checkpoint, net, optimizer, dist)
        _log(dist, f"resuming {cfg.out} at step {step:,} (epoch {epoch}, batch {epoch_step:,})")
    run.trim_metrics(step)
    ddp = dist.wrap(net)

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
                raise SraError(f"epoch {epoch} gives no training batches on some rank")
            data.set_epoch(epoch, position)
            for batch in _batches(data, cfg.workers, cfg.seed, epoch):
                if epoch_step >= steps_in(epoch) or step >= total:
                    break
                lr = lr_at(step, total, warmup_steps, cfg.lr, cfg.decay, cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                b = batch.to(dist.device)
                targets = F.normalize(b.targets, dim=-1) if cfg.normalize_targets else b.targets
                side: dict[str, torch.Tensor] = {}  # side objectives' values, for the log
                with autocast:
                    if cfg.lm_weight:
                        # Negatives seeded by step: the same on every rank and after a resume.
                        negatives = net.lm.draw(torch.Generator().manual_seed(cfg.seed + step))
                        pred, side["lm_loss"] = ddp(b.input_ids, b.lengths, negatives)
                    elif cfg.rf_weight:
                        # Edits seeded by step and rank: reproducible after a resume.
                        rng = np.random.default_rng([cfg.seed, step, dist.rank])
                        pred, side["rf_loss"], side["rf_acc"] = _real_fake_step(
                            ddp, cfg, batch, b, kinds, pad_id, rng
                        )
                    else:
                        pred = ddp(b.input_ids, b.lengths)
                pred = pred.float()
                mse = F.mse_loss(pred, targets)
                cos = F.cosine_similarity(pred, targets, dim=-1).mean()
                loss = mse + cfg.cos_weight * (1 - cos) if cfg.cos_weight else mse
                if "lm_loss" in side:
                    loss = loss + cfg.lm_weight * side["lm_loss"]
                if "rf_loss" in side:
                    loss = loss + cfg.rf_weight * side["rf_loss"]
                # Every rank must agree on stopping, so the check uses the all-reduced value.
                loss_value, cos_value, sentences, *side_values = dist.sum(
                    [loss.detach(), cos.detach(), float(len(batch))]
                    + [v.detach() for v in side.values()]
                )
                loss_value, cos_value = loss_value / dist.world, cos_value / dist.world
                extra = {k: float(v) / dist.world for k, v in zip(side, side_values, strict=True)}
                if not math.isfinite(loss_value):
                    raise _non_finite("loss", loss_value, step, lr, run)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip))
                if not math.isfinite(grad_norm):
                    raise _non_finite("gradient norm", grad_norm, step, lr, run)
                optimizer.step()

                step += 1
                epoch_step += 1
                position.advance(batch, data.streams)
                tokens = int(batch.lengths.sum()) * dist.world  # about: ranks see similar rows
                meter.train(
                    step, epoch, loss_value, cos_value, lr, int(sentences), tokens, extra=extra
                )
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                    with meter.paused():
                        meter.val(step, epoch, evaluate(model, val, dist, autocast, cfg))
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                    state = TrainState(step, epoch, epoch_step, position)
                    with meter.paused():
                        save_checkpoint(run, net, optimizer, state, fingerprint, dist)
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


def lr_at(
    step: int, total: int, warmup_steps: int, lr: float, decay: str, min_lr_ratio: float
) -> float:
    """Linear warmup to ``lr``, then cosine or linear decay to ``lr * min_lr_ratio``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if decay == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
    floor = lr * min_lr_ratio
    if decay == "linear":
        return lr - (lr - floor) * progress
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))


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
            raise SraError("the cache gives no training batches; use a larger cache")
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


def _non_finite(what: str, value: float, step: int, lr: float, run: RunDir) -> SraError:
    last = run.latest_step()
    kept = f"the last good checkpoint (step {last:,}) is kept" if last else "no checkpoint yet"
    return SraError(
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
    if not (cfg.lm_weight >= 0 and math.isfinite(cfg.lm_weight)) or cfg.lm_samples < 1:
        problems.append("--lm-weight must be a number >= 0 and --lm-samples >= 1")
    if cfg.lm_weight and cfg.layers != 1:
        problems.append(
            "--lm-weight needs --layers 1: stacked BiLSTM layers mix both directions, so each "
            "state would already have read the token it is asked to predict"
        )
    if not (cfg.rf_weight >= 0 and math.isfinite(cfg.rf_weight)):
        problems.append("--rf-weight must be a number >= 0")
    if cfg.rf_level not in ("sentence", "token"):
        problems.append(f"--rf-level must be sentence or token, got {cfg.rf_level!r}")
    if cfg.rf_weight and cfg.lm_weight:
        problems.append("--rf-weight and --lm-weight cannot be combined yet; pass one of them")
    if cfg.resume and cfg.overwrite:
        problems.append("--resume and --overwrite contradict each other; pass one")
    if problems:
        raise SraError("; ".join(problems))


def cache_tokenizer(cache: Cache) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(cache.tokenizer_path))
    except Exception:
        raise CacheError(
            f"cache {cache.path} has no readable tokenizer.json, which the student ships with; "
            "re-create the cache with `pipeline embed`"
        ) from None


def student_config(cfg: TrainConfig, cache: Cache, tokenizer: Tokenizer) -> StudentConfig:
    """The student's shape from the options, sized to the cache's teacher and tokenizer."""
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
            projection_hidden=cfg.projection_hidden,
            output_dim=target_dim(cache, cfg.pooling),
            pad_id=int(teacher.get("special_ids", {}).get("pad", 0)),
            max_length=int(teacher.get("max_length", 128)),
            teacher=str(teacher.get("name", "")),
            teacher_pooling=cfg.pooling,
            cache_fingerprint=cache.manifest.fingerprint,
        )
    except ValueError as e:
        raise SraError(f"bad student options: {e}") from None


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


def resolve_bf16(bf16: bool | None, device: torch.device) -> bool:
    """--bf16/--no-bf16 as given, or (None) whether bf16 pays off on this device."""
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if bf16 and not supported:
            raise SraError("this GPU has no bf16; pass --no-bf16")
        return supported if bf16 is None else bf16
    # On CPU bf16 autocast helps only where the hardware has bf16 matmuls (avx512_bf16/AMX).
    return cpu_bf16_supported() if bf16 is None else bf16


def _real_fake_step(
    ddp: torch.nn.Module,
    cfg: TrainConfig,
    batch: Batch,
    on_device: Batch,
    kinds: np.ndarray,
    pad_id: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Corrupt the batch (on the CPU copy) and run the student with its real/fake head."""
    ids, lengths = batch.input_ids.numpy(), batch.lengths.numpy()
    device = on_device.input_ids.device
    if cfg.rf_level == "token":
        fake, replaced = replace_tokens(ids, lengths, kinds, rng)
        extra = torch.from_numpy(replaced)
    else:
        fake, fake_lengths = corrupt(ids, lengths, kinds, pad_id, rng)
        extra = torch.from_numpy(fake_lengths)
    return ddp(on_device.input_ids, on_device.lengths, torch.from_numpy(fake).to(device), extra)


def _rf_identity(cfg: TrainConfig) -> dict[str, Any]:
    # Sentence-level runs keep the fingerprint they had before the token level existed.
    if cfg.rf_level == "token":
        return {"weight": cfg.rf_weight, "level": "token", "rate": TOKEN_RATE}
    return {"weight": cfg.rf_weight, "edits": list(EDITS)}


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
        # Written only when on, so runs without the bi-LM keep their fingerprints.
        **({"lm": {"weight": cfg.lm_weight, "samples": cfg.lm_samples}} if cfg.lm_weight else {}),
        **({"rf": _rf_identity(cfg)} if cfg.rf_weight else {}),
        # The batch order depends on how the rows are dealt out to processes and workers.
        "layout": {"world_size": world, "workers": cfg.workers},
    }


def _options(cfg: TrainConfig) -> dict[str, Any]:
    """Every option as given, JSON-ready, for run.json: what was asked, not only what counts."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()}


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _log(dist: Dist, message: str) -> None:
    if dist.rank == 0:
        print(message, file=sys.stderr, flush=True)
