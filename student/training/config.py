"""Everything `pipeline train` takes: ``TrainConfig``, whose fields are the command's options.

Nested by meaning: the student's shape (``student.config.StudentShape``), how batches are cut
(``DataConfig``), the optimiser and its schedule (``student.runs.OptimConfig``, shared with
fine-tuning), the objectives (``objectives.ObjectivesConfig``) and the run's bookkeeping
(``TrainRunOptions``). Every option is defined once, with its default and help, and the
command line is derived from them. No torch here: the command line imports this at start-up.

    from student import TrainConfig, train
    train(TrainConfig(cache="caches/wiki-minilm", out="runs/sra-minilm"))

From Python with the command line's option names: ``cache.options.configure(TrainConfig,
cache=..., out=..., layers=2, lm_weight=0.5)``.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache.errors import SraError
from cache.options import internal, nested, option
from student.config import StudentShape
from student.runs.options import OptimConfig, RunOptions
from student.training.objectives import ObjectivesConfig

if TYPE_CHECKING:
    from student.config import StudentConfig

INIT_EMBEDDINGS = ("teacher", "random")


@dataclass(frozen=True)
class DataConfig:
    """How batches are cut from the cache; every field but ``workers`` changes which batches
    a run sees."""

    pooling: str = option(
        "mean", "Teacher vectors to approximate: a cache column, or a comma list of them."
    )
    batch_size: int = option(256, "Most sentences per batch.")
    token_budget: int = option(8192, "Most padded tokens per batch (rows x longest row).")
    shuffle_buffer: int = option(100_000, "Rows shuffled and length-sorted together.")
    val_fraction: float = option(0.01, "Rows held out for validation (by id hash).")
    val_max_rows: int = option(2000, "Validate on at most this many held-out rows.")
    val_min_rows: int = internal(8, "at least this many rows are held out, however few the rows")
    workers: int = option(0, "DataLoader worker processes per rank (0: in-process).")
    seed: int = internal(0, "train() sets it to --seed: the batch order follows the run's seed")

    def __post_init__(self) -> None:
        for name in ("batch_size", "token_budget", "shuffle_buffer", "val_max_rows"):
            if getattr(self, name) < 1:
                raise SraError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.val_fraction < 0.5:
            raise SraError(f"--val-fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.val_min_rows < 0:
            raise SraError(f"val_min_rows must be >= 0, got {self.val_min_rows}")
        if self.workers < 0:
            raise SraError(f"--workers must be >= 0, got {self.workers}")

    def identity(self) -> dict[str, Any]:
        """What decides the batches (``workers`` is part of the run's layout instead)."""
        keys = ("pooling", "token_budget", "batch_size", "shuffle_buffer")
        keys += ("val_fraction", "val_min_rows", "val_max_rows", "seed")
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class TrainRunOptions(RunOptions):
    """RunOptions plus how often training validates, checkpoints and logs; none of these
    change the weights."""

    eval_every: int = option(500, "Validate every N steps (and at the end; 0: at the end).")
    checkpoint_every: int = option(500, "Checkpoint every N steps (0: never).")
    log_every: int = option(10, "Write a metrics line every N steps.")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise SraError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise SraError(f"--log-every must be >= 1, got {self.log_every}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `pipeline train` takes; its fields are the command's options."""

    cache: Path = option(MISSING, "Stage-one cache directory (pipeline embed --out).")
    out: Path = option(MISSING, "Run folder: checkpoints, metrics, the final student.")
    epochs: int | None = option(
        None, "Passes over the cache (default: 1, or as many as --max-steps needs)."
    )
    max_steps: int | None = option(None, "Stop after this many optimiser steps.")
    seed: int = option(0, "Seed for init, dropout and batch order.")
    init_embeddings: str = option(
        "teacher", "teacher (PCA of the teacher's token embeddings) | random."
    )
    student: StudentShape = nested(StudentShape)
    data: DataConfig = nested(DataConfig)
    optim: OptimConfig = nested(OptimConfig)
    objectives: ObjectivesConfig = nested(ObjectivesConfig)
    run: TrainRunOptions = nested(TrainRunOptions)

    def __post_init__(self) -> None:
        # Accept str paths from Python callers.
        object.__setattr__(self, "cache", Path(self.cache))
        object.__setattr__(self, "out", Path(self.out))
        if self.epochs is not None and self.epochs < 1:
            raise SraError(f"--epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise SraError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.init_embeddings not in INIT_EMBEDDINGS:
            raise SraError(
                f"--init-embeddings must be teacher or random, got {self.init_embeddings!r}"
            )
        self.objectives.check(self)

    def identity(
        self, *, cache: dict[str, Any], student: StudentConfig, bf16: bool, world: int
    ) -> dict[str, Any]:
        """Everything that decides the trained weights; its hash is the run's fingerprint.

        ``cache`` is the cache's fingerprint and rows, ``student`` the student's full config,
        ``bf16`` what autocast resolved to, ``world`` the number of processes. Keys and values
        are those of every earlier version, so a run's fingerprint never changes."""
        from student.training.objectives import merge

        optim = self.optim
        base = {
            "cache": cache,
            "student": student.to_dict(),
            "data": {**self.data.identity(), "seed": self.seed},
            "optim": {
                "epochs": self.epochs,
                "max_steps": self.max_steps,
                "lr": optim.lr,
                "min_lr_ratio": optim.min_lr_ratio,
                "warmup": optim.warmup,
                "decay": optim.decay,
                "weight_decay": optim.weight_decay,
                "grad_clip": optim.grad_clip,
                "init_embeddings": self.init_embeddings,
                "seed": self.seed,
            },
            "bf16": bf16,
            # The batch order depends on how rows are dealt out to processes and workers.
            "layout": {"world_size": world, "workers": self.data.workers},
        }
        return merge(base, self.objectives.identity())


def _flag(name: str) -> str:
    return name.replace("_", "-")
