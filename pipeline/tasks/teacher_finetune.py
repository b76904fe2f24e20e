"""`pipeline teacher-finetune`: fine-tune the teacher on a GLUE task (task-specific distillation).

The result is a standard Hugging Face model folder (``save_pretrained``: ``config.json``,
``model.safetensors``, the tokenizer) with a sequence-classification head, which
``pipeline embed --teacher FOLDER --outputs logits,mean`` runs to cache its logits. The
folder's ``config.json`` records ``finetuning_task``, so a cache can tell which task its
logits belong to.

Read top to bottom: ``teacher_finetune`` reads the task (TSVs or the hub), tokenizes every
example once (pairs jointly, as BERT does), then runs epochs of length-bucketed batches with
bf16 autocast where the hardware has it, evaluates dev after each, and keeps the best epoch.
A checkpoint every ``save_every`` steps lets ``--resume`` continue a killed run mid-epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from cache.errors import SraError
from cache.files import fsync_dir, write_atomic, write_file
from cache.tasks import TaskSpec, dev_splits
from pipeline.tasks.corpus import load_task_corpus
from pipeline.tasks.glue import Example
from pipeline.teacher import check_encoder, load_error_message, resolve_device, resolve_teacher
from student.checkpoint import optimizer_files, optimizer_state
from student.metrics import task_scores
from student.task_data import length_batches
from student.train import resolve_bf16

RUN_FILE, METRICS_JSON, METRICS_LOG, CHECKPOINT_DIR = (
    "teacher_finetune.json",
    "metrics.json",
    "metrics.jsonl",
    "checkpoint",
)
LARGE_TASK = 20_000  # train examples above which one epoch is the default


@dataclass
class TeacherFinetuneConfig:
    """Everything ``pipeline teacher-finetune`` takes."""

    task: str
    out: Path
    teacher: str | None = None  # any HF BERT-family encoder; None: the packaged MiniLM
    glue_dir: str | None = None  # original GLUE TSVs; None: $GLUE_DIR, else the hub
    epochs: int | None = None  # None: 1 on large tasks (> 20k train examples), else 3
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_length: int = 128
    seed: int = 0
    bf16: bool | None = None  # None: where the CPU has native bf16, or on CUDA
    device: str = "auto"
    save_every: int = 500  # steps between mid-epoch checkpoints
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    trust_remote_code: bool = False


def teacher_finetune(cfg: TeacherFinetuneConfig) -> dict[str, Any]:
    """Fine-tune into ``cfg.out``; returns the dev metrics written to metrics.json."""
    cfg.out = Path(cfg.out)
    if (cfg.epochs is not None and cfg.epochs < 1) or cfg.batch_size < 1 or cfg.save_every < 1:
        raise SraError("--epochs, --batch-size and --save-every must be >= 1")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise SraError(f"--lr must be a positive number, got {cfg.lr}")
    corpus = load_task_corpus(f"glue:{cfg.task}", cfg.glue_dir)
    task = corpus.task
    dev = dev_splits(task)[0]
    done = _prepare_out(cfg, task)
    if done is not None:
        return done
    device = resolve_device(cfg.device)
    bf16 = resolve_bf16(cfg.bf16, device)
    torch.manual_seed(cfg.seed)
    model, tokenizer = _load_model(cfg, task)
    model.to(device)
    train = _Encoded(tokenizer, corpus.examples["train"], task, cfg.max_length)
    evals = {
        s: _Encoded(tokenizer, corpus.examples[s], task, cfg.max_length) for s in dev_splits(task)
    }

    epochs = cfg.epochs or (1 if len(train) > LARGE_TASK else 3)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, int(cfg.warmup * total))
    decay = [p for n, p in model.named_parameters() if not _no_decay(n)]
    rest = [p for n, p in model.named_parameters() if _no_decay(n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr,
    )
    state = _load_checkpoint(cfg.out, model, optimizer, device) if cfg.resume else _State()
    _log(
        cfg,
        f"fine-tuning teacher {cfg.teacher or 'all-MiniLM-L6-v2'} on {task.name}: "
        f"{len(train):,} train / {len(evals[dev]):,} {dev} examples, {device.type}"
        f"{' bf16' if bf16 else ''}, {epochs} epochs of {steps_per_epoch:,} steps",
    )

    for epoch in range(state.epoch, epochs):
        model.train()
        batches = train.batches(cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
        t0, losses = time.perf_counter(), []
        with _bar(cfg, f"epoch {epoch + 1}/{epochs}", len(batches), state.batch) as advance:
            for b in range(state.batch, len(batches)):
                step = epoch * steps_per_epoch + b
                decay = max(0.0, (total - step) / max(1, total - warmup))
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * min((step + 1) / warmup, decay)
                inputs = train.inputs(batches[b], device, labels=True)
                with _autocast(device, bf16):
                    loss = model(**inputs).loss
                if not torch.isfinite(loss):
                    raise SraError(
                        f"the loss became {loss.item()} at step {step}; lower --lr (the last "
                        f"checkpoint is kept in {cfg.out / CHECKPOINT_DIR})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(loss.item())
                advance()
                state.batch = b + 1
                if state.batch % cfg.save_every == 0 and state.batch < len(batches):
                    _save_checkpoint(cfg.out, model, optimizer, state)
        scores = {s: _evaluate(model, e, task, device, bf16)[0] for s, e in evals.items()}
        main = scores[dev][task.main_metric]
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else None,
            "examples_per_s": round(len(losses) * cfg.batch_size / (time.perf_counter() - t0), 1),
            **{f"{s}_{k}": v for s, m in scores.items() for k, v in m.items()},
        }
        with open(cfg.out / METRICS_LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        words = (f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        _log(cfg, " ".join(words))
        if state.best is None or main > state.best:
            state.best, state.best_epoch = main, epoch + 1
            _save_model(cfg.out, model, tokenizer)
        state.epoch, state.batch = epoch + 1, 0
        _save_checkpoint(cfg.out, model, optimizer, state)

    # The folder holds the best epoch's model; score it once more for metrics.json.
    best_model = _reload(cfg.out, device)
    metrics: dict[str, Any] = {}
    for split, encoded in evals.items():
        scores, _ = _evaluate(best_model, encoded, task, device, bf16)
        if split == dev:
            metrics.update(scores)
        else:
            metrics[split] = scores
    metrics |= {"task": task.name, "split": dev, "epoch": state.best_epoch}
    metrics["epochs_run"] = state.epoch
    write_atomic(cfg.out / METRICS_JSON, (json.dumps(metrics, indent=2) + "\n").encode())
    shutil.rmtree(cfg.out / CHECKPOINT_DIR, ignore_errors=True)
    _log(
        cfg,
        f"{cfg.out}: {task.name} {dev} "
        + ", ".join(f"{k} {metrics[k]:.4f}" for k in task.metrics)
        + f" (epoch {state.best_epoch})",
    )
    return metrics


# ---------------------------------------------------------------------------- data


class _Encoded:
    """One split tokenized once: pairs jointly (``[CLS] a [SEP] b [SEP]``), as BERT reads them."""

    def __init__(self, tokenizer: Any, examples: list[Example], task: TaskSpec, max_length: int):
        first = [e.text_a for e in examples]
        second = [e.text_b or "" for e in examples] if task.pair else None
        enc = tokenizer(first, second, truncation=True, max_length=max_length)
        self.ids: list[list[int]] = enc["input_ids"]
        self.types: list[list[int]] = enc.get("token_type_ids") or [[0] * len(x) for x in self.ids]
        self.lengths = np.array([len(x) for x in self.ids])
        dtype = np.float32 if task.is_regression else np.int64
        self.labels = np.array([e.label if e.label is not None else -1 for e in examples], dtype)
        self.pad_id = int(tokenizer.pad_token_id or 0)

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Length-bucketed batches, shuffled with ``rng`` (as the student's fine-tuning)."""
        return list(length_batches(self.lengths, size, rng))

    def inputs(
        self, rows: np.ndarray, device: torch.device, labels: bool
    ) -> dict[str, torch.Tensor]:
        longest = int(self.lengths[rows].max())
        ids = np.full((len(rows), longest), self.pad_id, np.int64)
        types = np.zeros((len(rows), longest), np.int64)
        mask = np.zeros((len(rows), longest), np.int64)
        for r, i in enumerate(rows):
            n = self.lengths[i]
            ids[r, :n], types[r, :n], mask[r, :n] = self.ids[i], self.types[i], 1
        out = {
            "input_ids": torch.from_numpy(ids).to(device),
            "token_type_ids": torch.from_numpy(types).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
        }
        if labels:
            out["labels"] = torch.from_numpy(self.labels[rows]).to(device)
        return out


@torch.inference_mode()
def _evaluate(
    model: Any, data: _Encoded, task: TaskSpec, device: torch.device, bf16: bool
) -> tuple[dict[str, float], np.ndarray]:
    was_training = model.training
    model.eval()
    logits = np.empty((len(data), task.num_labels), np.float32)
    for rows in data.batches(128, None):
        with _autocast(device, bf16):
            logits[rows] = model(**data.inputs(rows, device, labels=False)).logits.float().cpu()
    model.train(was_training)
    predictions = logits[:, 0] if task.is_regression else logits.argmax(-1)
    return task_scores(task, predictions, data.labels), logits


# ---------------------------------------------------------------------------- the model


def _load_model(cfg: TeacherFinetuneConfig, task: TaskSpec) -> tuple[Any, Any]:
    """The encoder plus a fresh classification (or regression) head sized for the task."""
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    name = cfg.teacher or "sentence-transformers/all-MiniLM-L6-v2"
    source = resolve_teacher(cfg.teacher)
    labels = list(task.labels) if task.labels is not None else ["score"]
    try:
        config = AutoConfig.from_pretrained(
            source,
            num_labels=task.num_labels,
            id2label=dict(enumerate(labels)),
            label2id={v: i for i, v in enumerate(labels)},
            problem_type="regression" if task.is_regression else "single_label_classification",
            trust_remote_code=cfg.trust_remote_code,
        )
        # A teacher already fine-tuned on another task is an intermediate-task start
        # (STILTs, Phang et al. 2018): its encoder is kept, its head is not (below).
        previous_task = getattr(config, "finetuning_task", None)
        # transformers 5 dropped the standard field; an extra attribute still round-trips
        # through config.json, and stage one reads it to tie the logits to their task.
        config.finetuning_task = task.name
        check_encoder(name, config)
        tokenizer = AutoTokenizer.from_pretrained(
            source, use_fast=True, trust_remote_code=cfg.trust_remote_code
        )
        # A head fine-tuned for another label set is replaced rather than refused: the encoder
        # is what we start from.
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            config=config,
            ignore_mismatched_sizes=True,
            trust_remote_code=cfg.trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise SraError(load_error_message(name, e)) from None
    if previous_task and previous_task != task.name:
        # Same label count, other meanings (MRPC's 1 is "equivalent", RTE's 0 "entailment"):
        # a head of the right size is still the wrong head.
        _reset_head(model)
    return model, tokenizer


def _reset_head(model: Any) -> None:
    """Re-initialise every module outside the encoder, as a fresh head would be (BERT's init)."""
    # Not model._init_weights: on a model from from_pretrained it skips the modules it loaded.
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for name, module in model.named_modules():
            if not name or name.startswith(model.base_model_prefix):
                continue
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _save_model(out: Path, model: Any, tokenizer: Any) -> None:
    """save_pretrained into a temporary folder, then each file renamed into ``out``."""
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    fsync_dir(tmp)
    for f in sorted(tmp.iterdir()):
        f.replace(out / f.name)
    tmp.rmdir()
    fsync_dir(out)


def _reload(out: Path, device: torch.device) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(out).to(device).eval()


# ---------------------------------------------------------------------------- run folder


@dataclass
class _State:
    epoch: int = 0  # epochs finished
    batch: int = 0  # batches finished in the current epoch
    best: float | None = None
    best_epoch: int = 0


def _prepare_out(cfg: TeacherFinetuneConfig, task: TaskSpec) -> dict[str, Any] | None:
    """Refuse to mix runs; returns the metrics when this exact run is already complete."""
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise SraError(f"--out {out} is a file; choose a folder")
    options = {
        k: v
        for k, v in asdict(cfg).items()
        if k not in ("out", "resume", "overwrite", "progress", "device", "save_every")
    }
    options["task"] = task.name
    if resolve_teacher(cfg.teacher) == resolve_teacher(None):
        options["teacher"] = None  # the default teacher, however it was named
    run_file = out / RUN_FILE
    existing = None
    if run_file.is_file():
        try:
            existing = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise SraError(f"{run_file} is unreadable; pass --overwrite") from None
    if existing is None and out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise SraError(f"--out {out} is not empty and holds no teacher-finetune run")
    same = existing == options
    if existing is not None and not same and not cfg.overwrite:
        raise SraError(
            f"{out} holds a different teacher-finetune run; pass --overwrite to replace it"
        )
    if same and (out / METRICS_JSON).is_file() and not cfg.overwrite:
        _log(cfg, f"{out} is already complete; nothing to do")
        return json.loads((out / METRICS_JSON).read_text())
    if same and not cfg.resume and not cfg.overwrite and (out / CHECKPOINT_DIR).exists():
        raise SraError(f"{out} holds an unfinished run of this config; pass --resume")
    if cfg.overwrite or not same:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CHECKPOINT_DIR / "state.json").is_file():
        cfg.resume = False
    write_atomic(run_file, (json.dumps(options, indent=2) + "\n").encode())
    return None


def _save_checkpoint(
    out: Path, model: Any, optimizer: torch.optim.Optimizer, state: _State
) -> None:
    """checkpoint/ replaced whole, so a killed save leaves the previous one intact."""
    tensors, meta = optimizer_files(optimizer)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp, final = out / f".{CHECKPOINT_DIR}.tmp", out / CHECKPOINT_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_file(tmp / "model.safetensors", safetensors.torch.save(weights))
    write_file(tmp / "optimizer.safetensors", safetensors.torch.save(tensors))
    write_file(tmp / "rng.safetensors", safetensors.torch.save({"torch": torch.get_rng_state()}))
    write_file(tmp / "state.json", json.dumps({**asdict(state), "optimizer": meta}).encode())
    fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _load_checkpoint(
    out: Path, model: Any, optimizer: torch.optim.Optimizer, device: torch.device
) -> _State:
    folder = out / CHECKPOINT_DIR
    try:
        info = json.loads((folder / "state.json").read_text())
        model.load_state_dict(safetensors.torch.load_file(str(folder / "model.safetensors")))
        tensors = safetensors.torch.load_file(str(folder / "optimizer.safetensors"))
        optimizer.load_state_dict(optimizer_state(tensors, info.pop("optimizer"), device))
        torch.set_rng_state(safetensors.torch.load_file(str(folder / "rng.safetensors"))["torch"])
    except Exception as e:
        raise SraError(
            f"checkpoint {folder} is unreadable ({type(e).__name__}); pass --overwrite"
        ) from None
    print(f"resuming {out} at epoch {info['epoch'] + 1}, batch {info['batch']}", file=sys.stderr)
    return _State(**info)


def _log(cfg: TeacherFinetuneConfig, text: str) -> None:
    if cfg.progress:
        print(text, file=sys.stderr)


@contextlib.contextmanager
def _bar(cfg: TeacherFinetuneConfig, label: str, total: int, done: int) -> Any:
    if not (cfg.progress and sys.stderr.isatty()):
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=total, completed=done)
        yield lambda: progress.advance(task)
