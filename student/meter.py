"""Training metrics: ``metrics.jsonl`` for the report, progress for whoever is watching."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from student.checkpoint import METRICS_FILE, RunDir
from student.dist import Dist


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
        # Side objectives' values (lm_loss, rf_loss, rf_acc), averaged like the loss.
        self._extra: dict[str, list[float]] = {}
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
        extra: dict[str, float] | None = None,
    ) -> None:
        self._window.append((loss, cos))
        for key, value in (extra or {}).items():
            self._extra.setdefault(key, []).append(value)
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
        self._last_train.update({k: float(np.mean(v)) for k, v in self._extra.items()})
        self._write(self._last_train)
        self._extra = {}
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
                *([f"lm {t['lm_loss']:.3f}"] if "lm_loss" in t else []),
                *([f"real/fake acc {t['rf_acc']:.3f}"] if "rf_acc" in t else []),
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
