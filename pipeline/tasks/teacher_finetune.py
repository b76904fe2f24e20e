"""`pipeline teacher-finetune`: fine-tune the teacher on a task (task-specific distillation).

The task is a GLUE preset (``--task sst2``) or a user's own (``--task task:data/tickets``, read
with the same options as ``pipeline embed --corpus task:...``). The head follows the task's
problem: one output per class (cross-entropy), one per label (multi-label: BCE on each), or
one output trained on the raw score (regression, MSE; the student scales it, not the teacher).

The result is a standard Hugging Face model folder (``save_pretrained``: ``config.json``,
``model.safetensors``, the tokenizer) with a sequence-classification head, which
``pipeline embed --teacher FOLDER --outputs logits,mean`` runs to cache its logits. The
folder's ``config.json`` records ``finetuning_task``, so a cache can tell which task its
logits belong to.

Read top to bottom: ``teacher_finetune`` reads the task (TSVs or the hub), applies the run
folder's rule (``student.runs.folder``: done, resume or refuse, as `train` and `finetune`),
tokenizes every example once (pairs jointly, as BERT does), then runs epochs of
length-bucketed batches with bf16 autocast where the hardware has it, evaluates dev after
each, and keeps the best epoch. A checkpoint every ``save_every`` steps lets a rerun continue
a killed run mid-epoch. torch loads inside the functions: the config is read at start-up.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cache.errors import SraError
from cache.files import write_atomic
from cache.options import internal, nested, option, option_values
from cache.tasks import TaskSpec, dev_splits, get_task
from pipeline.tasks.own import TaskDataOptions, is_own_task
from student.runs.checkpoint import (
    json_bytes,
    optimizer_files,
    optimizer_state,
    read_state,
    read_tensors,
    tensors_bytes,
    unreadable,
)
from student.runs.folder import RunFolder, RunKind
from student.runs.options import OptimConfig, RunOptions
from student.runs.progress import Progress
from student.runs.schedule import lr_at
from student.runtime import autocast, resolve_bf16, resolve_device

if TYPE_CHECKING:
    import torch

METRICS_JSON = "metrics.json"
LARGE_TASK = 20_000  # train examples above which one epoch is the default


@dataclass(frozen=True)
class TeacherOptim(OptimConfig):
    """AdamW for the teacher: BERT's fine-tuning recipe, warmup then linear decay to 0."""

    lr: float = option(5e-5, "Peak learning rate (AdamW, warmup then linear decay).")
    warmup: float = option(0.1, "Share of the steps spent warming up linearly.")
    decay: str = option("linear", "cosine | linear | constant, after the warmup.")
    min_lr_ratio: float = option(0.0, "Where the decay ends, as a share of --lr.")
    warmup_rounding: str = internal("down", "teacher-finetune has always rounded it down")


@dataclass(frozen=True)
class TeacherFinetuneConfig:
    """Everything `pipeline teacher-finetune` takes; its fields are the command's options."""

    task: str = option(
        MISSING,
        "GLUE task (sst2, cola, mrpc, stsb, qqp, mnli, qnli, rte) or an own task: task:PATH "
        "(a folder of train/dev files), or task with --train/--dev.",
    )
    out: Path = option(MISSING, "Model folder to write (save_pretrained, safetensors).")
    teacher: str | None = option(
        None, "HF BERT-family name or folder (default: the packaged all-MiniLM-L6-v2)."
    )
    glue_dir: str | None = option(
        None, "Original GLUE TSV folder (default: $GLUE_DIR, else the hub)."
    )
    epochs: int | None = option(None, "Passes over train (default: 1 above 20k examples, else 3).")
    batch_size: int = option(32, "Examples per step.")
    max_length: int = option(128, "Tokens per example (a pair counts both).")
    seed: int = option(0, "Seed for the head and batch order.")
    save_every: int = option(500, "Steps between mid-epoch checkpoints.")
    trust_remote_code: bool = option(False, "Allow custom model code from the hub.")
    data: TaskDataOptions = nested(TaskDataOptions)
    optim: TeacherOptim = nested(TeacherOptim)
    run: RunOptions = nested(RunOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.own_task:
            if self.glue_dir is not None:
                raise SraError(f"--glue-dir reads GLUE tasks; --task {self.task} is your own")
        else:
            try:
                get_task(self.task)
            except ValueError as e:
                raise SraError(f"{e}, or task:PATH for your own data") from None
            if self.data.given():
                raise SraError(
                    f"{', '.join(self.data.given())} read an own task (--task task:PATH); "
                    f"{self.task} is a GLUE task with its own columns and labels"
                )
        if self.epochs is not None and self.epochs < 1:
            raise SraError(f"--epochs must be >= 1, got {self.epochs}")
        for name in ("batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise SraError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.max_length < 2:
            raise SraError(f"--max-length must be >= 2, got {self.max_length}")

    @property
    def own_task(self) -> bool:
        return is_own_task(self.task)

    @property
    def corpus(self) -> str:
        """The task as a stage-one corpus: ``glue:NAME`` or the own task as given."""
        return self.task if self.own_task else f"glue:{self.task}"

    def identity(self, task: TaskSpec, source: dict[str, Any] | None = None) -> dict[str, Any]:
        """What decides the model: the options as every earlier version recorded them, and
        for an own task its data (``source``: the files' sha256 and how they were read)."""
        from pipeline.teacher import resolve_teacher

        o = self.optim
        identity: dict[str, Any] = {
            "task": task.name,
            # The default teacher, however it was named.
            "teacher": None
            if resolve_teacher(self.teacher) == resolve_teacher(None)
            else self.teacher,
            "glue_dir": self.glue_dir,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": o.lr,
            "weight_decay": o.weight_decay,
            "warmup": o.warmup,
            "max_length": self.max_length,
            "seed": self.seed,
            "bf16": self.run.bf16,
            "trust_remote_code": self.trust_remote_code,
        }
        # Options added later count only when set: earlier runs keep their identity.
        defaults = TeacherOptim()
        for key in ("decay", "min_lr_ratio", "grad_clip"):
            if getattr(o, key) != getattr(defaults, key):
                identity[key] = getattr(o, key)
        if self.own_task:
            identity["data"] = source
        return identity


def _legacy(record: dict[str, Any], folder: Path) -> tuple[dict[str, Any], bool]:
    """teacher_finetune.json before the shared run format: it was the identity itself."""
    return record, (folder / METRICS_JSON).is_file()


TEACHER_RUN = RunKind(
    name="teacher-finetune",
    run_file="teacher_finetune.json",
    format="sra-teacher-finetune-run",
    outputs=("*",),  # a model folder: save_pretrained's files, whatever they are called
    legacy=_legacy,
)


def teacher_finetune(cfg: TeacherFinetuneConfig) -> dict[str, Any]:
    """Fine-tune into ``cfg.out``; returns the dev metrics written to metrics.json."""
    import torch

    from pipeline.tasks.corpus import load_task_corpus
    from pipeline.tasks.teacher_model import (
        Encoded,
        load_model,
        no_decay,
        reload,
        save_model,
        score,
    )

    corpus = load_task_corpus(cfg.corpus, cfg.glue_dir, cfg.data)
    task = corpus.task
    dev = dev_splits(task)[0]
    run = RunFolder(cfg.out, TEACHER_RUN)
    start = run.prepare(
        cfg.identity(task, corpus.source),
        options=option_values(cfg),
        overwrite=cfg.run.overwrite,
    )
    if start.done:
        return _read_metrics(cfg.out)
    device = resolve_device(cfg.run.device)
    bf16 = resolve_bf16(cfg.run.bf16, device)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg.teacher, task, cfg.trust_remote_code)
    model.to(device)
    train = Encoded(tokenizer, corpus.examples["train"], task, cfg.max_length)
    evals = {
        s: Encoded(tokenizer, corpus.examples[s], task, cfg.max_length) for s in dev_splits(task)
    }

    epochs = cfg.epochs or (1 if len(train) > LARGE_TASK else 3)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = epochs * steps_per_epoch
    decay = [p for n, p in model.named_parameters() if not no_decay(n)]
    rest = [p for n, p in model.named_parameters() if no_decay(n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optim.weight_decay},
            {"params": rest, "weight_decay": 0},
        ],
        lr=cfg.optim.lr,
    )
    state = _State()
    if start.checkpoint is not None:
        state = _load_checkpoint(start.checkpoint, model, optimizer, device)
        print(
            f"resuming {cfg.out} at epoch {state.epoch + 1}, batch {state.batch}", file=sys.stderr
        )
    done = state.epoch * steps_per_epoch + state.batch
    run.metrics.trim(done)

    with Progress("teacher-finetune", total, done=done, enabled=cfg.run.progress) as progress:
        progress.note(
            f"fine-tuning teacher {cfg.teacher or 'all-MiniLM-L6-v2'} on {task.name}: "
            f"{len(train):,} train / {len(evals[dev]):,} {dev} examples, {device.type}"
            f"{' bf16' if bf16 else ''}, {epochs} epochs of {steps_per_epoch:,} steps"
        )
        for epoch in range(state.epoch, epochs):
            model.train()
            batches = train.batches(cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
            t0, losses = time.perf_counter(), []
            for b in range(state.batch, len(batches)):
                step = epoch * steps_per_epoch + b
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total, cfg.optim)
                inputs = train.inputs(batches[b], device, labels=True)
                with autocast(device, bf16):
                    loss = model(**inputs).loss
                if not torch.isfinite(loss):
                    raise SraError(
                        f"the loss became {loss.item()} at step {step}; lower --lr and rerun "
                        f"with --overwrite (the last checkpoint is kept in "
                        f"{run.checkpoints.folder})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                losses.append(loss.item())
                state.batch = b + 1
                progress.update(step + 1, f"epoch {epoch + 1}/{epochs} · loss {losses[-1]:.4f}")
                if state.batch % cfg.save_every == 0 and state.batch < len(batches):
                    _save_checkpoint(run, model, optimizer, state, step + 1)
            scores = {s: score(model, e, task, device, bf16)[0] for s, e in evals.items()}
            main = scores[dev][task.main_metric]
            record = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * steps_per_epoch,
                "loss": float(np.mean(losses)) if losses else None,
                "examples_per_s": round(
                    len(losses) * cfg.batch_size / (time.perf_counter() - t0), 1
                ),
                **{f"{s}_{k}": v for s, m in scores.items() for k, v in m.items()},
            }
            run.metrics.append(record)
            progress.note(
                " ".join(
                    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in record.items()
                )
            )
            if state.best is None or main > state.best:
                state.best, state.best_epoch = main, epoch + 1
                save_model(cfg.out, model, tokenizer)
            state.epoch, state.batch = epoch + 1, 0
            _save_checkpoint(run, model, optimizer, state, (epoch + 1) * steps_per_epoch)

    # The folder holds the best epoch's model; score it once more for metrics.json.
    best_model = reload(cfg.out, device)
    metrics: dict[str, Any] = {}
    for split, encoded in evals.items():
        scores, _ = score(best_model, encoded, task, device, bf16)
        if split == dev:
            metrics.update(scores)
        else:
            metrics[split] = scores
    metrics |= {"task": task.name, "split": dev, "epoch": state.best_epoch}
    metrics["epochs_run"] = state.epoch
    write_atomic(cfg.out / METRICS_JSON, (json_bytes(metrics)))
    run.finish()
    if cfg.run.progress:
        print(
            f"{cfg.out}: {task.name} {dev} "
            + ", ".join(f"{k} {metrics[k]:.4f}" for k in task.metrics)
            + f" (epoch {state.best_epoch})",
            file=sys.stderr,
        )
    return metrics


def _read_metrics(out: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((out / METRICS_JSON).read_text())
    except (OSError, ValueError) as e:
        raise SraError(
            f"{out / METRICS_JSON} is unreadable ({type(e).__name__}); pass --overwrite"
        ) from None


# ---------------------------------------------------------------------------- checkpoints


@dataclass
class _State:
    epoch: int = 0  # epochs finished
    batch: int = 0  # batches finished in the current epoch
    best: float | None = None
    best_epoch: int = 0


def _save_checkpoint(
    run: RunFolder, model: Any, optimizer: torch.optim.Optimizer, state: _State, step: int
) -> None:
    import torch

    tensors, meta = optimizer_files(optimizer)
    files = {
        "model.safetensors": tensors_bytes(model.state_dict()),
        "optimizer.safetensors": tensors_bytes(tensors),
        "rng.safetensors": tensors_bytes({"torch": torch.get_rng_state()}),
        "state.json": json_bytes(
            {**asdict(state), "step": step, "fingerprint": run.fingerprint, "optimizer": meta}
        ),
    }
    run.checkpoints.save(step, files)


def _load_checkpoint(
    folder: Path, model: Any, optimizer: torch.optim.Optimizer, device: torch.device
) -> _State:
    import torch

    info = read_state(folder)
    try:
        model.load_state_dict(read_tensors(folder, "model.safetensors"))
        tensors = read_tensors(folder, "optimizer.safetensors")
        optimizer.load_state_dict(optimizer_state(tensors, info["optimizer"], device))
        torch.set_rng_state(read_tensors(folder, "rng.safetensors")["torch"])
        return _State(info["epoch"], info["batch"], info["best"], info["best_epoch"])
    except SraError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise unreadable(folder, e) from None
