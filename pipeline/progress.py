"""Progress for long jobs: a rich bar on a terminal, plain periodic log lines elsewhere."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class EmbedProgress:
    """Sentences and tokens per second, shards written, and an ETA when the total is known."""

    def __init__(
        self, total: int | None, done: int = 0, every: float = 30.0, enabled: bool = True
    ) -> None:
        self.total = total
        self.sentences = done
        self.tokens = 0
        self.shards = 0
        self.every = every
        self.enabled = enabled
        self._start = time.monotonic()
        self._new = 0  # sentences embedded by this run, for rates
        # The first window carries one-off costs (reader start, kernel selection, compilation);
        # the steady rate after it is what a long run achieves.
        self._warm: tuple[float, int] | None = None
        self._last_log = self._start
        self._console = Console(stderr=True)
        self._rich: Progress | None = None
        self._task = None

    def __enter__(self) -> EmbedProgress:
        if self.enabled and self._console.is_terminal:
            self._rich = Progress(
                TextColumn("[bold]embed"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._rich.__enter__()
            self._task = self._rich.add_task(
                "embed", total=self.total, completed=self.sentences, rate=""
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rich is not None:
            self._rich.__exit__(exc_type, exc, tb)

    @property
    def rate(self) -> tuple[float, float]:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        return self._new / elapsed, self.tokens / elapsed

    @property
    def steady_rate(self) -> float | None:
        if self._warm is None or self._new == self._warm[1]:
            return None
        elapsed = max(time.monotonic() - self._warm[0], 1e-9)
        return (self._new - self._warm[1]) / elapsed

    def update(self, sentences: int = 0, tokens: int = 0, shards: int | None = None) -> None:
        self.sentences += sentences
        self._new += sentences
        if self._warm is None:
            self._warm = (time.monotonic(), self._new)
        self.tokens += tokens
        if shards is not None:
            self.shards = shards
        sps, tps = self.rate
        text = f"{sps:,.0f} sent/s · {tps:,.0f} tok/s · {self.shards} shards"
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, completed=self.sentences, rate=text)
            return
        now = time.monotonic()
        if self.enabled and now - self._last_log >= self.every:
            self._last_log = now
            total = f"/{self.total:,}" if self.total else ""
            eta = ""
            if self.total and sps > 0:
                eta = f" · ETA {max(self.total - self.sentences, 0) / sps:,.0f}s"
            print(f"embed: {self.sentences:,}{total} sentences · {text}{eta}", file=sys.stderr)
