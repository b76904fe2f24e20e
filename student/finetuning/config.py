"""Everything `pipeline finetune` takes: ``FinetuneConfig``, whose fields are the command's
options (the command line is derived from them). No torch here: it is read at start-up."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from cache.errors import SraError
from cache.options import internal, nested, option
from cache.tasks import TaskSpec
from student.runs.options import OptimConfig, RunOptions

SCRATCH, TEACHER = "scratch", "teacher"  # --student: a fresh default student | frozen vectors
HEADS = ("mlp", "linear")
DISTILL_LOSSES = ("mse", "kl")
SELECTS = ("best", "last")


@dataclass(frozen=True)
class FinetuneOptim(OptimConfig):
    """AdamW for fine-tuning: warmup, then linear decay to 0, as fine-tuning always did."""

    lr: float = option(1e-3, "Peak learning rate (AdamW, warmup then linear decay).")
    warmup: float = option(0.1, "Share of the steps spent warming up linearly.")
    decay: str = option("linear", "cosine | linear | constant, after the warmup.")
    min_lr_ratio: float = option(0.0, "Where the decay ends, as a share of --lr.")
    warmup_rounding: str = internal("down", "fine-tuning has always rounded its warmup down")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything `pipeline finetune` takes."""

    student: str = option(
        MISSING, "Student folder (pipeline train --out) | scratch | teacher (frozen vectors)."
    )
    cache: Path = option(
        MISSING, "Task cache (pipeline embed --corpus glue:TASK or --corpus task:PATH)."
    )
    out: Path = option(
        MISSING, "Run folder: metrics, predictions, and the model (TaskModel.from_pretrained)."
    )
    task: str | None = option(
        None, "The task, checked against the cache's (default: the task the cache holds)."
    )
    epochs: int | None = option(
        None, "Passes over the training split (default: 3, up to 10 on small tasks: ~600 steps)."
    )
    batch_size: int = option(64, "Examples per step.")
    # The encoder's peak rate when it differs from the head's (discriminative fine-tuning,
    # Howard & Ruder 2018): a lower one keeps more of what distillation put there.
    encoder_lr: float | None = option(
        None, "The encoder's peak learning rate, if lower than the head's (default: --lr)."
    )
    freeze_encoder: bool = option(False, "Train the head only, on the student's fixed vectors.")
    head: str | None = option(None, "mlp | linear (default: linear when frozen, else mlp).")
    head_hidden: int = option(512, "Hidden units of the MLP head.")
    dropout: float = option(0.1, "Dropout in the MLP head.")
    # A distillation run may use no dropout (a million sentences underfit, small tasks
    # overfit), so fine-tuning sets its own, the same for every row. None: keep the student's.
    encoder_dropout: float | None = option(
        0.1, "Dropout in the encoder (token embeddings, between layers) while fine-tuning."
    )
    sra_weight: float = option(
        0.0, "Also keep approximating the cached teacher vectors: W * (1 - cosine)."
    )
    distill_weight: float = option(
        0.0, "Weight of the loss to the fine-tuned teacher's cached logits (Tang et al.)."
    )
    distill_loss: str = option("mse", "mse on logits | kl (with --temperature).")
    temperature: float = option(1.0, "Softening of --distill-loss kl.")
    label_weight: float = option(1.0, "Weight of the gold-label loss.")
    augmented: bool = option(
        True, "With --distill-weight: also train on the cache's augmented examples."
    )
    pooling: str = option("mean", "Teacher vectors of the cache to use.")
    select: str = option("best", "best (dev early stopping) | last epoch.")
    patience: int = option(2, "With --select best: epochs without a new best.")
    seed: int = option(0, "Seed for the head, dropout and batch order.")
    optim: FinetuneOptim = nested(FinetuneOptim)
    run: RunOptions = nested(RunOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache", Path(self.cache))
        object.__setattr__(self, "out", Path(self.out))
        if self.task is not None and not str(self.task).strip():
            raise SraError("--task must not be empty (leave it out to use the cache's task)")
        if self.epochs is not None and self.epochs < 1:
            raise SraError(f"--epochs must be >= 1, got {self.epochs}")
        for name in ("batch_size", "head_hidden"):
            if getattr(self, name) < 1:
                raise SraError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise SraError(f"--patience must be >= 0, got {self.patience}")
        lr = self.encoder_lr
        if lr is not None and not (lr > 0 and math.isfinite(lr)):
            raise SraError(
                f"--encoder-lr must be a positive number, got {lr} "
                "(to keep the encoder fixed, pass --freeze-encoder)"
            )
        if self.head is not None and self.head not in HEADS:
            raise SraError(f"--head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.select not in SELECTS:
            raise SraError(f"--select must be best or last, got {self.select!r}")
        for name in ("sra_weight", "distill_weight", "label_weight", "temperature"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise SraError(f"--{_flag(name)} must be >= 0, got {value}")
        for name in ("dropout", "encoder_dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise SraError(f"--{_flag(name)} must be in [0, 1), got {value}")
        if self.distill_loss not in DISTILL_LOSSES:
            raise SraError(
                f"--distill-loss must be one of {', '.join(DISTILL_LOSSES)}, "
                f"got {self.distill_loss!r}"
            )
        # Combinations: each names the options that clash.
        if self.distill_weight <= 0 and self.label_weight <= 0:
            raise SraError("--label-weight and --distill-weight are both 0: nothing to learn")
        if self.distill_loss == "kl" and not self.temperature > 0:
            raise SraError("--temperature must be > 0 with --distill-loss kl")
        if self.sra_weight > 0 and self.frozen:
            raise SraError("--sra-weight needs a trainable encoder (not frozen, not teacher)")

    def check_task(self, task: TaskSpec) -> None:
        """The options that depend on the task, once the cache has said which it is."""
        if self.distill_loss == "kl" and task.is_regression:
            raise SraError("--distill-loss kl needs classes; use mse for a regression task")

    @property
    def frozen(self) -> bool:
        return self.freeze_encoder or self.student == TEACHER

    @property
    def head_kind(self) -> str:
        return self.head or ("linear" if self.frozen else "mlp")

    def identity(self, *, task: str, cache: str, student_weights: str) -> dict[str, Any]:
        """What decides the result: the options (as every earlier version wrote them), the
        student's weights (a hash, or scratch / teacher) and the task cache's fingerprint.
        ``task`` is the cache's task name, unless --task spelled it (as runs always did)."""
        o = self.optim
        options: dict[str, Any] = {
            "student": self.student,
            "task": self.task if self.task is not None else task,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": o.lr,
            "weight_decay": o.weight_decay,
            "warmup": o.warmup,
            "grad_clip": o.grad_clip,
            "freeze_encoder": self.freeze_encoder,
            "head": self.head,
            "head_hidden": self.head_hidden,
            "dropout": self.dropout,
            "sra_weight": self.sra_weight,
            "pooling": self.pooling,
            "select": self.select,
            "patience": self.patience,
            "seed": self.seed,
            "bf16": self.run.bf16,
        }
        # Options added later count only when set, so that runs made before them keep their
        # identity (and `pipeline evaluate` reuses them).
        defaults, optim_defaults = _DEFAULTS, FinetuneOptim()
        for key in (
            "distill_weight",
            "distill_loss",
            "temperature",
            "label_weight",
            "augmented",
            "encoder_dropout",
            "encoder_lr",
        ):
            if getattr(self, key) != getattr(defaults, key):
                options[key] = getattr(self, key)
        for key in ("decay", "min_lr_ratio"):
            if getattr(o, key) != getattr(optim_defaults, key):
                options[key] = getattr(o, key)
        return {"options": options, "student_weights": student_weights, "cache": cache}


def _flag(name: str) -> str:
    return name.replace("_", "-")


_DEFAULTS = FinetuneConfig(student=SCRATCH, task="sst2", cache=Path(), out=Path())
