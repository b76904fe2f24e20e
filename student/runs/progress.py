"""What a training run tells its watcher and its report: progress, and ``metrics.jsonl``.

``Progress`` is a rich bar on a terminal; elsewhere (a log file, a job scheduler) it prints a
plain line at least every 30 seconds, so a log always shows that the run is alive.
``MetricsLog`` appends one JSON object per line; a resumed run first trims the lines past its
checkpoint, so each step appears once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from cache.files import write_atomic

METRICS_FILE = "metrics.jsonl"
PLAIN_EVERY = 30.0  # seconds between plain progress lines


class Progress:
    """Steps done out of ``total``: a rich bar on a terminal, else plain lines."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        done: int = 0,
        enabled: bool = True,
        every: float = PLAIN_EVERY,
    ) -> None:
        self.label = label
        self.total = total
        self.done = done
        self.enabled = enabled
        self.every = every
        self._last = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        from rich.console import Console

        console = Console(stderr=True)
        if self.enabled and console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
            self._bar.update(self._task, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def update(self, done: int, info: str = "", *, force: bool = False) -> None:
        """``done`` steps so far; ``info`` the latest numbers. Plain lines come at most every
        ``every`` seconds, unless ``force``."""
        self.done = done
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
            return
        now = time.perf_counter()
        if force or now - self._last >= self.every:
            self._last = now
            tail = f" · {info}" if info else ""
            print(f"{self.label}: step {done:,}/{self.total:,}{tail}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A line worth keeping (an epoch's scores): above the bar, or on stderr."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr, flush=True)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, each with the ``step`` it was taken at."""

    def __init__(self, folder: Path, *, writer: bool = True) -> None:
        self.path = folder / METRICS_FILE
        self.writer = writer  # False on the ranks of a job that only compute

    def append(self, record: dict[str, Any]) -> None:
        if self.writer:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def trim(self, step: int) -> None:
        """Drop lines past ``step``: a killed run logged steps that its resume redoes."""
        if not self.writer or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
        write_atomic(self.path, ("\n".join(kept) + "\n" if kept else "").encode())

    def read(self) -> list[dict[str, Any]]:
        """Every readable line (a killed run can leave half a line)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records
