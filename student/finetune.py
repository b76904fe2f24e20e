"""Fine-tune a student (or a fresh one, or the teacher's frozen vectors) on a GLUE task.

Reads only a task cache (``pipeline embed --corpus glue:TASK``): token ids, labels and the
teacher's vectors of the task's own sentences. No teacher is loaded. Read top to bottom:
``finetune`` sets up, runs epochs, keeps the best dev epoch, writes the outputs.

The run folder OUT ends up holding::

    metrics.json              dev metrics under their GLUE names (accuracy, f1, mcc, ...)
    metrics.jsonl             per-epoch training loss and dev metrics
    predictions-SPLIT.tsv     index<TAB>prediction for dev (and test where it exists)
    encoder/                  the fine-tuned StudentEncoder (not for --student teacher)
    head.safetensors          the task head, described in finetune.json
    finetune.json             the options, the task and the run's fingerprint
    checkpoint/               the last finished epoch: --resume continues after it
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F

from cache import Cache, open_cache
from cache.errors import SraError
from cache.files import fsync_dir, sha256_file, write_atomic, write_file
from cache.task_data import AUGMENTED, read_logits, read_task
from cache.tasks import STSB_MAX, TaskSpec, dev_splits, get_task
from student.checkpoint import optimizer_files, optimizer_state
from student.dist import resolve_device
from student.encoder import StudentEncoder
from student.metrics import task_scores
from student.model import BiLSTMEncoder
from student.task_data import Examples, Sentences, example_batches, load_examples, load_sentences
from student.task_model import DISTILL_LOSSES, HEADS, TaskHead, distill_loss
from student.train import TrainConfig, cache_tokenizer, resolve_bf16, student_config

SCRATCH, TEACHER = "scratch", "teacher"
RUN_FILE, METRICS_JSON, METRICS_LOG = "finetune.json", "metrics.json", "metrics.jsonl"
HEAD_FILE, ENCODER_DIR, CHECKPOINT_DIR = "head.safetensors", "encoder", "checkpoint"


@dataclass
class FinetuneConfig:
    """Everything ``pipeline finetune`` takes."""

    student: str  # a student folder | "scratch" (fresh default student) | "teacher" (frozen)
    task: str
    cache: Path
    out: Path
    epochs: int | None = None  # None: 3, or up to 10 on small tasks (see epochs_for)
    batch_size: int = 64
    lr: float = 1e-3
    # The encoder's peak rate when it differs from the head's (discriminative fine-tuning,
    # Howard & Ruder 2018): a lower one keeps more of what distillation put there. None: lr.
    encoder_lr: float | None = None
    weight_decay: float = 0.01
    warmup: float = 0.1  # share of all steps spent warming up, then linear decay to 0
    grad_clip: float = 1.0
    freeze_encoder: bool = False
    head: str | None = None  # mlp | linear; None: linear when frozen, else mlp
    head_hidden: int = 512
    dropout: float = 0.1
    # Dropout in the encoder (token embeddings, between layers) while fine-tuning. A
    # distillation run may use none (a million sentences underfit, small tasks overfit), so
    # fine-tuning sets its own, the same for every row. None: keep the student's.
    encoder_dropout: float | None = 0.1
    sra_weight: float = 0.0  # weight of (1 - cosine to the cached teacher vectors)
    distill_weight: float = 0.0  # weight of the loss to a fine-tuned teacher's cached logits
    distill_loss: str = "mse"  # mse on logits (Tang et al. 2019) | kl (soft targets, Hinton)
    temperature: float = 1.0  # with distill_loss kl
    label_weight: float = 1.0  # weight of the gold-label loss (labelled examples only)
    augmented: bool = True  # with distill_weight > 0: also train on the cache's augmented split
    pooling: str = "mean"  # which cached teacher vectors: SRA targets, teacher features
    select: str = "best"  # best: keep the best dev epoch (early stopping) | last
    patience: int = 2  # with select=best: stop after this many epochs without a new best
    seed: int = 0
    bf16: bool | None = None
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    @property
    def frozen(self) -> bool:
        return self.freeze_encoder or self.student == TEACHER

    @property
    def head_kind(self) -> str:
        return self.head or ("linear" if self.frozen else "mlp")


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune into ``cfg.out``; returns the dev metrics written to metrics.json."""
    cfg.cache, cfg.out = Path(cfg.cache), Path(cfg.out)
    _check_options(cfg)
    device = resolve_device(cfg.device)
    bf16 = resolve_bf16(cfg.bf16, device)

    # -- the task cache and the student ---------------------------------------------------
    cache = open_cache(cfg.cache)
    task_data = read_task(cache)
    task = task_data.task
    if task.name != _task_name(cfg.task):
        raise SraError(
            f"--task {cfg.task} but {cfg.cache} holds {task.name}; build a cache with "
            f"`pipeline embed --corpus glue:{_task_name(cfg.task)}`"
        )
    splits = [s for s in task_data.splits if s != AUGMENTED]
    evals = list(dev_splits(task))
    for split in ("train", *evals):
        if split not in splits:
            raise SraError(
                f"task cache {cfg.cache} has no {split!r} split; rebuild it from a GLUE folder "
                f"that holds {task.folder}/{task.splits[split]}"
            )
    encoder = _load_student(cfg, cache)
    if encoder is not None and cfg.encoder_dropout is not None:
        encoder.model.set_dropout(cfg.encoder_dropout)
    sentences = load_sentences(cache, cfg.pooling)
    if cfg.sra_weight > 0 and encoder is not None:
        wanted, have = encoder.config.output_dim, sentences.vectors.shape[1]
        if wanted != have:
            raise SraError(
                f"the student approximates {wanted}-d teacher vectors "
                f"({encoder.config.teacher_pooling}), but --pooling {cfg.pooling} in {cfg.cache} "
                f"is {have}-d; pass --pooling {encoder.config.teacher_pooling} with a task cache "
                "that has those columns"
            )
    data = {s: load_examples(cache, s, task.pair) for s in splits}
    for split in ("train", *evals):
        if not data[split].labelled:
            raise SraError(f"split {split!r} of {cfg.cache} has examples without labels")
    train, train_logits = data["train"], None
    if cfg.distill_weight > 0:
        # The transfer set: the training examples plus, when the cache has them, augmented
        # variants that only the teacher labelled (Tang et al. 2019).
        train_logits = read_logits(cache, "train")
        if cfg.augmented and AUGMENTED in task_data.splits:
            extra = load_examples(cache, AUGMENTED, task.pair)
            train = _concat(train, extra)
            train_logits = np.concatenate([train_logits, read_logits(cache, AUGMENTED)])

    identity = _identity(cfg, cache, encoder)
    done = _prepare_out(cfg, identity)
    if done is not None:
        return done

    torch.manual_seed(cfg.seed)
    dim = cache.dim if encoder is None else encoder.config.output_dim
    head = TaskHead(dim, task.pair, task.num_labels, cfg.head_kind, cfg.head_hidden, cfg.dropout)
    model = _Model(encoder.model if encoder is not None else None, head).to(device)
    features = None
    if cfg.frozen:  # vectors never change: compute each sentence's once, train the head only
        needed = np.unique(np.concatenate([_ids(train)] + [_ids(data[s]) for s in splits]))
        features = _frozen_features(model, sentences, needed, encoder, device, bf16)
    optimizer = _Optimizers(model, cfg)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    epochs = cfg.epochs or epochs_for(steps_per_epoch, cfg.frozen)
    total = steps_per_epoch * epochs
    warmup = max(1, int(cfg.warmup * total))

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        return cfg.lr * max(0.0, (total - step) / max(1, total - warmup))

    state = _State()
    if cfg.resume:
        state = _load_checkpoint(cfg.out, model, optimizer, device)
    pad = encoder.config.pad_id if encoder is not None else 0
    log = _Log(cfg.out / METRICS_LOG, cfg.progress)
    log.line(
        f"fine-tuning {cfg.student} on {task.name}: {len(train):,} train / "
        + " / ".join(f"{len(data[s]):,} {s}" for s in evals)
        + f" examples, {cfg.head_kind} head{', encoder frozen' if cfg.frozen else ''}, "
        f"{device.type}{' bf16' if bf16 else ''}, {epochs} epochs of {steps_per_epoch:,} steps"
    )

    # -- epochs ---------------------------------------------------------------------------
    for epoch in range(state.epoch, epochs):
        if state.stale >= cfg.patience > 0 and cfg.select == "best":
            break
        rng = np.random.default_rng([cfg.seed, epoch])
        model.train()
        losses: list[float] = []
        t0 = time.perf_counter()
        batches = list(example_batches(train, sentences.lengths, cfg.batch_size, rng))
        with log.bar(f"epoch {epoch + 1}/{epochs}", len(batches)) as advance:
            for rows in batches:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(state.step) * group.get("lr_scale", 1.0)
                loss = _loss(
                    model,
                    task,
                    train,
                    train_logits,
                    rows,
                    sentences,
                    features,
                    pad,
                    cfg,
                    device,
                    bf16,
                )
                if not torch.isfinite(loss):
                    raise SraError(
                        f"the loss became {loss.item()} at step {state.step} (epoch {epoch + 1}); "
                        f"lower --lr; the last finished epoch is kept in {cfg.out / CHECKPOINT_DIR}"
                    )
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(optimizer.dense, cfg.grad_clip)
                optimizer.step()
                losses.append(loss.item())
                state.step += 1
                advance()
        seconds = time.perf_counter() - t0
        scores = {
            s: _evaluate(model, task, data[s], sentences, features, pad, device, bf16)[0]
            for s in evals
        }
        main = scores[evals[0]][task.main_metric]
        record = {
            "epoch": epoch + 1,
            "step": state.step,
            "loss": float(np.mean(losses)),
            "examples_per_s": round(len(train) / seconds, 1),
            **{f"{s}_{k}": v for s, m in scores.items() for k, v in m.items()},
        }
        log.write(record)
        improved = state.best is None or main > state.best
        if improved or cfg.select == "last":
            state.best, state.best_epoch, state.stale = main, epoch + 1, 0
            state.best_weights = {
                k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            }
        else:
            state.stale += 1
        state.epoch = epoch + 1
        _save_checkpoint(cfg.out, model, optimizer, state)

    # -- outputs ------------------------------------------------------------------------------
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    metrics: dict[str, Any] = {}
    for split in splits:
        if split == "train":
            continue
        scores, predictions = _evaluate(
            model, task, data[split], sentences, features, pad, device, bf16
        )
        _write_predictions(cfg.out / f"predictions-{split}.tsv", task, data[split], predictions)
        if split == evals[0]:
            metrics.update(scores)
        elif split in evals:
            metrics[split] = scores
    metrics |= {
        "task": task.name,
        "split": evals[0],
        "epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "seed": cfg.seed,
        "student": cfg.student,
    }
    _save_outputs(cfg, model, encoder, task, metrics, identity)
    log.line(
        f"{cfg.out}: {task.name} {evals[0]} "
        + ", ".join(f"{k} {metrics[k]:.4f}" for k in task.metrics)
        + f" (epoch {state.best_epoch})"
    )
    return metrics


# ---------------------------------------------------------------------------- the model


class _Model(torch.nn.Module):
    """Encoder (absent for teacher features) plus head; forward takes sentence vectors."""

    def __init__(self, encoder: BiLSTMEncoder | None, head: TaskHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head


def _encode(
    model: _Model, sentences: Sentences, ids: np.ndarray, pad: int, device: torch.device
) -> torch.Tensor:
    assert model.encoder is not None
    tokens, lengths = sentences.padded(ids, pad)
    return model.encoder(tokens.to(device), lengths)


def _vectors(
    model: _Model,
    ex: Examples,
    rows: np.ndarray,
    sentences: Sentences,
    features: torch.Tensor | None,
    pad: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if features is not None:
        u = features[torch.from_numpy(ex.first[rows])].to(device)
        v = None if ex.second is None else features[torch.from_numpy(ex.second[rows])].to(device)
        return u, v
    u = _encode(model, sentences, ex.first[rows], pad, device)
    v = None if ex.second is None else _encode(model, sentences, ex.second[rows], pad, device)
    return u, v


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _loss(
    model: _Model,
    task: TaskSpec,
    ex: Examples,
    teacher_logits: np.ndarray | None,
    rows: np.ndarray,
    sentences: Sentences,
    features: torch.Tensor | None,
    pad: int,
    cfg: FinetuneConfig,
    device: torch.device,
    bf16: bool,
) -> torch.Tensor:
    with _autocast(device, bf16):
        u, v = _vectors(model, ex, rows, sentences, features, pad, device)
        out = model.head(u, v)
    out = out.float()
    loss = out.new_zeros(())
    labels = ex.labels[rows]
    known = ~np.isnan(labels) if task.is_regression else labels >= 0  # augmented: unlabelled
    if cfg.label_weight > 0 and known.any():
        keep = torch.from_numpy(known).to(device)
        gold = torch.from_numpy(labels[known]).to(device)
        if task.is_regression:
            # Scores scaled to [0, 1]: MSE on STS-B's 0-5 scale makes gradients 25x larger
            # than cross-entropy's and trains far worse at the same learning rate.
            label_loss = F.mse_loss(out[keep], gold.float() / STSB_MAX)
        else:
            label_loss = F.cross_entropy(out[keep], gold)
        loss = loss + cfg.label_weight * label_loss
    if teacher_logits is not None:
        target = torch.from_numpy(teacher_logits[rows]).to(device)
        if task.is_regression:  # the teacher predicts the 0-5 score; the head, score / 5
            target = target[:, 0] / STSB_MAX
        loss = loss + cfg.distill_weight * distill_loss(
            out, target, cfg.distill_loss, cfg.temperature
        )
    if cfg.sra_weight > 0 and features is None:
        # Keep approximating the teacher on the task's own sentences (cosine: the student may
        # have been trained on unit-length targets, the cache holds raw vectors).
        targets = [(u, ex.first[rows])] + ([] if v is None else [(v, ex.second[rows])])
        for vec, ids in targets:
            t = torch.from_numpy(sentences.vectors[ids]).to(device)
            loss = loss + cfg.sra_weight * (1 - F.cosine_similarity(vec.float(), t).mean())
    return loss


@torch.inference_mode()
def _evaluate(
    model: _Model,
    task: TaskSpec,
    ex: Examples,
    sentences: Sentences,
    features: torch.Tensor | None,
    pad: int,
    device: torch.device,
    bf16: bool,
) -> tuple[dict[str, float], np.ndarray]:
    was_training = model.training
    model.eval()
    outputs = np.empty((len(ex),) if task.is_regression else (len(ex), task.num_labels), np.float32)
    for rows in example_batches(ex, sentences.lengths, 256, None):
        with _autocast(device, bf16):
            u, v = _vectors(model, ex, rows, sentences, features, pad, device)
            outputs[rows] = model.head(u, v).float().cpu().numpy()
    predictions = outputs * STSB_MAX if task.is_regression else outputs.argmax(-1)
    scores = task_scores(task, predictions, ex.labels) if ex.labelled else {}
    model.train(was_training)
    return scores, predictions


@torch.inference_mode()
def _frozen_features(
    model: _Model,
    sentences: Sentences,
    ids: np.ndarray,
    encoder: StudentEncoder | None,
    device: torch.device,
    bf16: bool,
) -> torch.Tensor:
    if encoder is None:  # the teacher's own cached vectors
        return torch.from_numpy(sentences.vectors)
    assert model.encoder is not None
    model.encoder.eval()
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    out = torch.zeros(len(sentences.lengths), encoder.config.output_dim)
    order = ids[np.argsort(sentences.lengths[ids], kind="stable")]
    for i in range(0, len(order), 512):
        chunk = order[i : i + 512]
        with _autocast(device, bf16):
            out[torch.from_numpy(chunk)] = (
                _encode(model, sentences, chunk, encoder.config.pad_id, device).float().cpu()
            )
    return out


def _concat(a: Examples, b: Examples) -> Examples:
    second = None if a.second is None or b.second is None else np.concatenate([a.second, b.second])
    return Examples(
        np.concatenate([a.idx, b.idx]),
        np.concatenate([a.labels, b.labels]),
        np.concatenate([a.first, b.first]),
        second,
    )


def _ids(ex: Examples) -> np.ndarray:
    return ex.first if ex.second is None else np.concatenate([ex.first, ex.second])


# ---------------------------------------------------------------------------- setup


def _task_name(name: str) -> str:
    try:
        return get_task(name).name
    except ValueError as e:
        raise SraError(str(e)) from None


def _check_options(cfg: FinetuneConfig) -> None:
    _task_name(cfg.task)
    problems = []
    if (cfg.epochs is not None and cfg.epochs < 1) or cfg.batch_size < 1:
        problems.append("--epochs and --batch-size must be >= 1")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        problems.append(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.encoder_lr is not None and not (cfg.encoder_lr > 0 and math.isfinite(cfg.encoder_lr)):
        problems.append(
            f"--encoder-lr must be a positive number, got {cfg.encoder_lr} "
            "(to keep the encoder fixed, pass --freeze-encoder)"
        )
    if cfg.head is not None and cfg.head not in HEADS:
        problems.append(f"--head must be one of {', '.join(HEADS)}, got {cfg.head!r}")
    if cfg.select not in ("best", "last"):
        problems.append(f"--select must be best or last, got {cfg.select!r}")
    if not (cfg.sra_weight >= 0 and math.isfinite(cfg.sra_weight)):
        problems.append(f"--sra-weight must be >= 0, got {cfg.sra_weight}")
    for name in ("distill_weight", "label_weight", "temperature"):
        value = getattr(cfg, name)
        if not (value >= 0 and math.isfinite(value)):
            problems.append(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if cfg.distill_weight <= 0 and cfg.label_weight <= 0:
        problems.append("--label-weight and --distill-weight are both 0: nothing to learn")
    if cfg.distill_loss not in DISTILL_LOSSES:
        problems.append(f"--distill-loss must be one of {', '.join(DISTILL_LOSSES)}")
    elif cfg.distill_loss == "kl" and get_task(cfg.task).is_regression:
        problems.append("--distill-loss kl needs classes; use mse for a regression task")
    if cfg.distill_loss == "kl" and not cfg.temperature > 0:
        problems.append("--temperature must be > 0")
    if cfg.sra_weight > 0 and cfg.frozen:
        problems.append("--sra-weight needs a trainable encoder (not frozen, not teacher)")
    if not 0 <= cfg.dropout < 1:
        problems.append(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.encoder_dropout is not None and not 0 <= cfg.encoder_dropout < 1:
        problems.append(f"--encoder-dropout must be in [0, 1), got {cfg.encoder_dropout}")
    if problems:
        raise SraError("; ".join(problems))


def _load_student(cfg: FinetuneConfig, cache: Cache) -> StudentEncoder | None:
    """The encoder to fine-tune, checked against the task cache's teacher and tokenizer."""
    tokenizer = cache_tokenizer(cache)
    if cfg.student == TEACHER:
        return None
    if cfg.student == SCRATCH:
        config = student_config(TrainConfig(cache=cache.path, out=cfg.out), cache, tokenizer)
        return StudentEncoder(config, BiLSTMEncoder(config), tokenizer=tokenizer)
    folder = Path(cfg.student)
    if not (folder / "config.json").is_file() and (folder / ENCODER_DIR / "config.json").is_file():
        folder = folder / ENCODER_DIR  # a fine-tuned run: start from its encoder
    encoder = StudentEncoder.from_pretrained(folder)
    if encoder.tokenizer.get_vocab(with_added_tokens=True) != tokenizer.get_vocab(
        with_added_tokens=True
    ):
        raise SraError(
            f"the student {cfg.student} and the task cache {cache.path} use different "
            f"vocabularies; build the task cache with the student's teacher "
            f"({encoder.config.teacher or 'unknown'})"
        )
    teacher = str(cache.manifest.config.get("teacher", {}).get("name", ""))
    # Only --sra-weight uses the cache's vectors as targets; a cache of a fine-tuned teacher
    # (for its logits) is expected to differ from the student's teacher.
    if (
        cfg.sra_weight > 0
        and encoder.config.teacher
        and teacher
        and encoder.config.teacher != teacher
    ):
        print(
            f"warning: the student was distilled from {encoder.config.teacher} but the task "
            f"cache {cache.path} holds vectors of {teacher}; --sra-weight then pulls it "
            "towards another teacher",
            file=sys.stderr,
        )
    return encoder


def _identity(cfg: FinetuneConfig, cache: Cache, encoder: StudentEncoder | None) -> dict[str, Any]:
    options = dataclasses.asdict(cfg)
    for key in ("cache", "out", "resume", "overwrite", "progress", "device"):
        options.pop(key)
    # Options added later count only when set, so runs made before them keep their identity.
    defaults = FinetuneConfig(student="", task="", cache=Path(), out=Path())
    for key in (
        "distill_weight",
        "distill_loss",
        "temperature",
        "label_weight",
        "augmented",
        "encoder_dropout",
        "encoder_lr",
    ):
        if options[key] == getattr(defaults, key):
            options.pop(key)
    student = cfg.student
    if encoder is not None and cfg.student != SCRATCH:
        weights = Path(cfg.student)
        weights = (
            weights / "model.safetensors"
            if (weights / "model.safetensors").is_file()
            else (weights / ENCODER_DIR / "model.safetensors")
        )
        student = sha256_file(weights)[:16]
    return {"options": options, "student_weights": student, "cache": cache.manifest.fingerprint}


def _fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _prepare_out(cfg: FinetuneConfig, identity: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse to mix runs; returns the metrics when this exact run is already complete."""
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise SraError(f"--out {out} is a file; choose a folder")
    run_file = out / RUN_FILE
    existing = _read_json(run_file) if run_file.is_file() else None
    if existing is None and out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise SraError(f"--out {out} is not empty and holds no finetune run; choose another")
    same = existing is not None and existing.get("fingerprint") == _fingerprint(identity)
    if existing is not None and not same and not cfg.overwrite:
        raise SraError(
            f"{out} holds a different finetune run ({existing.get('task')}, student "
            f"{existing.get('student')}); pass --overwrite to replace it or choose another --out"
        )
    if same and (out / METRICS_JSON).is_file() and not cfg.overwrite:
        print(f"{out} is already complete; nothing to do", file=sys.stderr)
        return _read_json(out / METRICS_JSON)
    if same and not cfg.resume and not cfg.overwrite and (out / CHECKPOINT_DIR).exists():
        raise SraError(f"{out} holds an unfinished run of this config; pass --resume")
    if cfg.overwrite or not same:
        shutil.rmtree(out, ignore_errors=True)
        cfg.resume = False
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CHECKPOINT_DIR).exists():
        cfg.resume = False
    run = {
        "fingerprint": _fingerprint(identity),
        "task": _task_name(cfg.task),
        "student": cfg.student,
        **identity,
    }
    write_atomic(run_file, (json.dumps(run, indent=2) + "\n").encode())
    return None


def epochs_for(steps_per_epoch: int, frozen: bool) -> int:
    """3 epochs, or more on small tasks (up to 10) so that they get about 600 steps.

    A head on frozen vectors costs next to nothing per epoch (the vectors are computed once),
    so it always gets 10: a linear head is still improving after 3 epochs of SST-2.
    """
    return 10 if frozen else max(3, min(10, math.ceil(600 / steps_per_epoch)))


class _Optimizers:
    """AdamW for the dense weights; SparseAdam for the token embeddings.

    Fine-tuning touches a few hundred of the ~30k embedding rows per step; a dense AdamW
    step over the whole table cost more than the LSTM itself at batch 64 (measured on this
    CPU: 343 examples/s dense vs 815 with sparse gradients, 892 with the table frozen).
    """

    def __init__(self, model: _Model, cfg: FinetuneConfig) -> None:
        embedding = model.encoder.embedding if model.encoder is not None else None
        sparse = embedding is not None and embedding.weight.requires_grad
        if sparse:
            assert embedding is not None
            embedding.sparse = True
        self.dense = [
            p
            for p in model.parameters()
            if p.requires_grad and not (sparse and p is embedding.weight)  # type: ignore[union-attr]
        ]
        # lr_scale: the schedule sets each group's rate to its scale times the head's rate.
        # One group when the rates agree, as before the option existed, so that checkpoints
        # written then still load.
        scale = (cfg.encoder_lr if cfg.encoder_lr is not None else cfg.lr) / cfg.lr
        groups = [{"params": self.dense, "lr_scale": 1.0}]
        if scale != 1.0 and model.encoder is not None:
            encoder = {id(p) for p in model.encoder.parameters()}
            groups = [
                {"params": [p for p in self.dense if id(p) in encoder], "lr_scale": scale},
                {"params": [p for p in self.dense if id(p) not in encoder], "lr_scale": 1.0},
            ]
        self.all: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(
                [g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay
            )
        ]
        if sparse:
            assert embedding is not None
            sparse_group = {"params": [embedding.weight], "lr_scale": scale}
            self.all.append(torch.optim.SparseAdam([sparse_group], lr=cfg.lr))

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.all for g in o.param_groups]

    def zero_grad(self) -> None:
        for o in self.all:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.all:
            o.step()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SraError(
            f"{path} is unreadable ({type(e).__name__}); pass --overwrite to start the run over"
        ) from None
    if not isinstance(data, dict):
        raise SraError(f"{path} is not a finetune file; pass --overwrite to start over")
    return data


# ---------------------------------------------------------------------------- checkpoints


@dataclass
class _State:
    epoch: int = 0  # epochs finished
    step: int = 0
    best: float | None = None
    best_epoch: int = 0
    stale: int = 0  # epochs since the best
    best_weights: dict[str, torch.Tensor] | None = None


def _save_checkpoint(out: Path, model: _Model, optimizer: _Optimizers, state: _State) -> None:
    """checkpoint/ replaced whole: a killed save leaves the previous epoch's intact."""
    saved = [optimizer_files(o) for o in optimizer.all]
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    best = {k: v.contiguous() for k, v in (state.best_weights or {}).items()}
    info = {k: v for k, v in dataclasses.asdict(state).items() if k != "best_weights"}
    files = {
        "model.safetensors": safetensors.torch.save(weights),
        "best.safetensors": safetensors.torch.save(best),
        **{
            f"optimizer{i}.safetensors": safetensors.torch.save(t) for i, (t, _) in enumerate(saved)
        },
        "rng.safetensors": safetensors.torch.save({"torch": torch.get_rng_state()}),
        "state.json": json.dumps({**info, "optimizers": [m for _, m in saved]}).encode(),
    }
    tmp = out / f".{CHECKPOINT_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, data in files.items():
        write_file(tmp / name, data)
    fsync_dir(tmp)
    old = out / f".{CHECKPOINT_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / CHECKPOINT_DIR).exists():
        (out / CHECKPOINT_DIR).rename(old)
    tmp.rename(out / CHECKPOINT_DIR)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(
    out: Path, model: _Model, optimizer: _Optimizers, device: torch.device
) -> _State:
    folder = out / CHECKPOINT_DIR
    if not (folder / "state.json").is_file() and (out / f".{CHECKPOINT_DIR}.old").is_dir():
        folder = out / f".{CHECKPOINT_DIR}.old"  # killed between the two renames
    try:
        info = json.loads((folder / "state.json").read_text())
        model.load_state_dict(safetensors.torch.load_file(str(folder / "model.safetensors")))
        best = safetensors.torch.load_file(str(folder / "best.safetensors"))
        for i, (o, meta) in enumerate(zip(optimizer.all, info.pop("optimizers"), strict=True)):
            tensors = safetensors.torch.load_file(str(folder / f"optimizer{i}.safetensors"))
            o.load_state_dict(optimizer_state(tensors, meta, device))
        torch.set_rng_state(safetensors.torch.load_file(str(folder / "rng.safetensors"))["torch"])
    except Exception as e:
        raise SraError(
            f"checkpoint {folder} is unreadable ({type(e).__name__}); pass --overwrite to start "
            "over"
        ) from None
    print(f"resuming {out} after epoch {info['epoch']}", file=sys.stderr)
    return _State(**info, best_weights=best or None)


# ---------------------------------------------------------------------------- outputs


def _write_predictions(path: Path, task: TaskSpec, ex: Examples, predictions: np.ndarray) -> None:
    if task.labels is None:
        values = [f"{float(p):.4f}" for p in predictions]
    else:
        values = [task.labels[int(p)] for p in predictions]
    lines = ["index\tprediction"] + [f"{i}\t{v}" for i, v in zip(ex.idx, values, strict=True)]
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def _save_outputs(
    cfg: FinetuneConfig,
    model: _Model,
    encoder: StudentEncoder | None,
    task: TaskSpec,
    metrics: dict[str, Any],
    identity: dict[str, Any],
) -> None:
    out = cfg.out
    if encoder is not None:
        encoder.model = model.encoder  # type: ignore[assignment]
        encoder.save_pretrained(out / ENCODER_DIR)
    head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    write_atomic(out / HEAD_FILE, safetensors.torch.save(head))
    run = json.loads((out / RUN_FILE).read_text())
    run["head"] = {
        "kind": cfg.head_kind,
        "hidden": cfg.head_hidden,
        "pair": task.pair,
        "outputs": task.num_labels,
        "labels": task.labels,
    }
    write_atomic(out / RUN_FILE, (json.dumps(run, indent=2) + "\n").encode())
    write_atomic(out / METRICS_JSON, (json.dumps(metrics, indent=2) + "\n").encode())


class _Log:
    """metrics.jsonl, plus a rich bar per epoch on a terminal, else plain lines."""

    def __init__(self, path: Path, progress: bool) -> None:
        self.path = path
        self.progress = progress and sys.stderr.isatty()
        self.quiet = not progress

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.line(
            " ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
            )
        )

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr)

    @contextlib.contextmanager
    def bar(self, label: str, total: int) -> Any:
        if not self.progress:
            yield lambda: None
            return
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task(label, total=total)
            yield lambda: progress.advance(task)
