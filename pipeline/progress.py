"""Progress for long jobs: a rich bar on a terminal, plain periodic log lines elsewhere; and
`StartupClock`, when a run reached its first steps (recorded in the manifest's totals).

Off a terminal (a log file, CI, nohup) a line comes at least every `every` seconds (30 by
default), also while nothing is counted yet: loading the teacher, compiling it, skipping the
windows a resumed run already has. A heartbeat thread writes it, so a phase that blocks the
main thread for minutes (torch.compile) still shows that the run is alive and what it does.

Rates are shown only once they mean something: the first batch carries one-off costs (kernel
selection, compilation), so the rate is measured from its end, and only after a few seconds.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
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

# A rate over less time than this is mostly noise (and start-up).
MIN_RATE_SECONDS = 3.0


class EmbedProgress:
    """Sentences and tokens per second, shards written, and an ETA when the total is known.

    Use: `phase("loading the teacher")` while getting ready, then `start(total, done)` and
    `update(sentences, tokens)` once per teacher batch. `every=0` prints a line per update
    and starts no heartbeat (tests).
    """

    def __init__(
        self,
        total: int | None = None,
        done: int = 0,
        every: float = 30.0,
        enabled: bool = True,
        console: Console | None = None,
    ) -> None:
        self.total = total
        self.sentences = done
        self.tokens = 0
        self.shards = 0
        self.every = every
        self.enabled = enabled
        self.phase_text = "starting"
        self._console = console or Console(stderr=True)
        self._t0 = time.monotonic()  # when the run started
        self._phase_t0 = self._t0
        self._start = self._t0  # when counting started (`start`)
        self._counting = False
        self._new = 0  # sentences embedded by this run, for rates
        # The first batch carries one-off costs (kernel selection, compilation); the steady
        # rate is measured from its end.
        self._warm: tuple[float, int, int] | None = None
        self._last_line = self._t0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._rich: Progress | None = None
        self._task = None

    @property
    def terminal(self) -> bool:
        return self._console.is_terminal

    def __enter__(self) -> EmbedProgress:
        if self.enabled and not self.terminal and self.every > 0:
            self._heartbeat = threading.Thread(
                target=self._beat, name="progress-heartbeat", daemon=True
            )
            self._heartbeat.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2)
        if self._rich is not None:
            self._rich.__exit__(exc_type, exc, tb)
            self._rich = None

    # -- what the run is doing ---------------------------------------------------------------

    def phase(self, text: str) -> None:
        """Say what the run is doing now (one line, on a terminal too)."""
        with self._lock:
            self.phase_text = text
            self._phase_t0 = time.monotonic()
            if self._rich is not None and self._task is not None:
                self._rich.update(self._task, description=text)
                return
        self._line(f"embed: {text}")

    def start(self, total: int | None, done: int = 0) -> None:
        """Begin counting sentences: `done` are already in the cache."""
        with self._lock:
            self.total = total
            self.sentences = done
            self._counting = True
            self._start = time.monotonic()
        if self.enabled and self.terminal:
            self._rich = Progress(
                TextColumn("[bold]{task.description}"),
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
                self.phase_text, total=total, completed=done, rate="measuring speed…"
            )

    # -- counting ----------------------------------------------------------------------------

    @property
    def rate(self) -> tuple[float, float]:
        """(sentences/s, tokens/s) of this run since counting started."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        return self._new / elapsed, self.tokens / elapsed

    @property
    def steady_rate(self) -> float | None:
        """Sentences/s after the first batch, once measured over a few seconds; else None."""
        if self._warm is None:
            return None
        elapsed = time.monotonic() - self._warm[0]
        if self._new == self._warm[1] or elapsed <= 0:
            return None
        return (self._new - self._warm[1]) / elapsed

    def _shown_rate(self) -> tuple[float, float] | None:
        if self._warm is None or time.monotonic() - self._warm[0] < MIN_RATE_SECONDS:
            return None
        elapsed = time.monotonic() - self._warm[0]
        sentences = self._new - self._warm[1]
        if sentences <= 0:
            return None
        return sentences / elapsed, (self.tokens - self._warm[2]) / elapsed

    def update(self, sentences: int = 0, tokens: int = 0, shards: int | None = None) -> None:
        """Count one teacher batch (or a whole window)."""
        with self._lock:
            self.sentences += sentences
            self._new += sentences
            self.tokens += tokens
            if self._warm is None:
                self._warm = (time.monotonic(), self._new, self.tokens)
            if shards is not None:
                self.shards = shards
            text = self._status()
            if self._rich is not None and self._task is not None:
                self._rich.update(self._task, completed=self.sentences, rate=text)
                return
        if self.enabled and time.monotonic() - self._last_line >= self.every:
            self._line(self._counted_line(text))

    def _status(self) -> str:
        shown = self._shown_rate()
        speed = (
            "measuring speed…"
            if shown is None
            else (f"{shown[0]:,.0f} sent/s · {shown[1]:,.0f} tok/s")
        )
        return f"{speed} · {self.shards} shards"

    def _counted_line(self, text: str) -> str:
        total = f"/{self.total:,}" if self.total else ""
        eta = ""
        shown = self._shown_rate()
        if self.total and shown is not None:
            eta = f" · ETA {max(self.total - self.sentences, 0) / shown[0]:,.0f}s"
        return f"embed: {self.sentences:,}{total} sentences · {text}{eta}"

    # -- plain lines -------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        if not self.enabled:
            return
        self._last_line = time.monotonic()
        if self.terminal:
            self._console.print(text, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def _beat(self) -> None:
        """Off a terminal: a line at least every `every` seconds, whatever the main thread does."""
        tick = min(1.0, max(self.every / 4, 0.01))
        while not self._stop.wait(tick):
            if time.monotonic() - self._last_line < self.every:
                continue
            with self._lock:
                if self._counting and self._warm is not None:
                    text = self._counted_line(self._status())
                else:
                    waited = time.monotonic() - self._phase_t0
                    text = f"embed: still {self.phase_text} ({waited:,.0f} s)"
            self._line(text)


class StartupClock:
    """When a run reached its first steps, for `totals.startup_seconds` (`bench startup`).

    Times count from the start of the process (Linux; elsewhere from the call to `embed()`), so
    interpreter start and imports are in: a short job is mostly start-up.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic() - _process_age()
        self.marks: dict[str, float] = {"embed_called": time.monotonic()}

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.monotonic())

    def as_dict(self) -> dict[str, float]:
        # Keys end in "seconds": merged ranks keep the longest, not the sum.
        return {f"{k}_seconds": round(v - self.t0, 2) for k, v in self.marks.items()}


def _process_age() -> float:
    """Seconds since this process started (0 where /proc cannot say)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0
