"""Training metrics: averages between log lines for ``metrics.jsonl``, and the progress line.

Every ``log_every`` steps one line goes to ``metrics.jsonl``: the mean loss and the mean of
every value the objectives log (``train_cos``, ``lm_loss``, ``rf_acc`` ...) since the last
line, the learning rate, and throughput (time spent validating and checkpointing excluded).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from student.runs.progress import MetricsLog, Progress

# Keys of a line shown otherwise or not at all; every other value (what objectives log) is shown.
_NOT_SHOWN = ("step", "epoch", "loss", "lr", "sentences_per_s", "tokens_per_s", "elapsed_s")


class Meter:
    """Averages, ``metrics.jsonl`` lines and the progress of one training run."""

    def __init__(
        self, metrics: MetricsLog, total: int, *, done: int, progress: bool, log_every: int
    ) -> None:
        self.metrics = metrics
        self.total = total
        self.log_every = max(1, log_every)
        self.progress = Progress("train", total, done=done, enabled=progress)
        self._start = self._mark = time.perf_counter()
        self._values: dict[str, list[float]] = {}  # since the last line
        self._sentences = self._tokens = 0
        self._run_sentences = 0
        self._paused = 0.0  # seconds spent validating and checkpointing
        self._last_train: dict[str, Any] = {}
        self._last_val: dict[str, Any] = {}

    def __enter__(self) -> Meter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def train(
        self,
        step: int,
        epoch: int,
        lr: float,
        values: dict[str, float],
        sentences: int,
        tokens: int,
    ) -> None:
        """One step's ``values`` (``loss`` and what the objectives log); a line every
        ``log_every`` steps and at the last."""
        for key, value in values.items():
            self._values.setdefault(key, []).append(value)
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
            **{k: float(np.mean(v)) for k, v in self._values.items()},
            "lr": lr,
            "sentences_per_s": round(self._sentences / seconds, 1),
            "tokens_per_s": round(self._tokens / seconds, 1),
            "elapsed_s": round(now - self._start, 2),
        }
        self.metrics.append(self._last_train)
        self._values, self._sentences, self._tokens, self._mark = {}, 0, 0, now
        self.progress.update(step, self._line())

    def val(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        self._last_val = {"step": step, "epoch": epoch, **metrics}
        self.metrics.append(self._last_val)
        self.progress.update(step, self._line(), force=True)

    def _line(self) -> str:
        t, v = self._last_train, self._last_val
        parts = []
        if t:
            parts.append(f"loss {t['loss']:.4g}")
            parts += [f"{k} {t[k]:.3f}" for k in t if k not in _NOT_SHOWN]
            parts += [f"lr {t['lr']:.2e}", f"{t['sentences_per_s']:,.0f} sent/s"]
        if v:
            parts.append(f"val cos {v['val_cos']:.4f}")
        return " · ".join(parts)

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
