"""Reading and tokenizing the corpus in a separate process, a few windows ahead of the teacher.

Reading, decoding, sentence splitting and dedup are pure Python. In a thread they would hold
the GIL between the teacher's torch ops and slow its forward pass (measured: several-fold);
in a process they overlap with it for real. Windows travel as plain lists.

The reader never outlives the run: on Linux the kernel kills it when its parent dies
(`die_with_parent`, however the parent died, SIGKILL included), and every blocking step
also checks that the parent is still there.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cache.errors import SraError
from pipeline.corpus import CorpusSpec, CorpusStats
from pipeline.sentences import FilterConfig, iter_sentences


@dataclass
class Window:
    """One window of the stream, tokenized."""

    index: int
    first_id: int  # ids are stream positions: window index x window size + offset
    texts: list[str]
    sources: list[str]
    ids: list[list[int]]
    truncated: list[bool]  # truncation to max_length cut tokens off


@dataclass
class ReadPlan:
    spec: CorpusSpec
    filters: FilterConfig
    limit: int | None
    window: int
    start: int  # first window not yet in the cache
    rank: int
    world: int
    tokenizer_json: str  # the teacher's Rust tokenizer, already set to truncate
    # A task corpus's texts, taken as they are: no splitting, filtering or dedup (see
    # pipeline/tasks/corpus.py). None: stream `spec` through the sentence filters.
    sentences: list[str] | None = None
    # Windows before `start` to produce again: those of damaged shards being repaired.
    redo: tuple[int, ...] = ()

    def wants(self, index: int) -> bool:
        return index in self.redo or (index >= self.start and index % self.world == self.rank)


def tokenize(backend: Any, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    encodings = backend.encode_batch(texts)
    return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]


def plan_windows(
    plan: ReadPlan, stats: CorpusStats, started: Iterator[tuple[str, str]] | None = None
) -> Iterator[Window]:
    """The windows this rank owns, from `start` on; earlier ones are read (for dedup) only.

    `started`: the sentence stream, already opened (and partly read) before the plan was known;
    the limit is applied here, so reading could begin before the limit was decided.
    """
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(plan.tokenizer_json)
    if plan.sentences is None:
        raw = (
            started if started is not None else iter_sentences(plan.spec, plan.filters, None, stats)
        )
        stream = raw if plan.limit is None else itertools.islice(raw, plan.limit)
    else:
        stats.emitted = len(plan.sentences)
        stream = ((text, f"{plan.spec.corpus}:{i}") for i, text in enumerate(plan.sentences))
    emitted = 0
    for index in itertools.count():
        chunk = list(itertools.islice(stream, plan.window))
        if not chunk:
            break
        emitted += len(chunk)
        if plan.wants(index):
            texts = [t for t, _ in chunk]
            ids, truncated = tokenize(backend, texts)
            sources = [s for _, s in chunk]
            yield Window(index, index * plan.window, texts, sources, ids, truncated)
    if plan.sentences is None:
        stats.emitted = emitted  # what passed the limit, whatever was read ahead of it


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (prctl PR_SET_PDEATHSIG).

    A no-op elsewhere; callers still check `os.getppid()` on every blocking step. The signal
    comes when the parent *thread* that forked us exits, so only call this in a child forked
    from a thread that lives as long as the parent cares about it (the main thread here).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# The child runs this in a fresh interpreter (see CorpusReader).
CHILD = "from pipeline.reader import child_main; child_main()"


class CorpusReader:
    """The reader process. Started before the teacher loads, it opens the corpus and reads (and
    splits) up to `prefetch` sentences meanwhile; `windows(plan)` then hands it what only a
    loaded teacher and an opened cache can say (tokenizer, limit, first window, windows to
    redo), and yields its windows; the last item is the finished stream's CorpusStats.

    The child is a fresh interpreter (`python -c CHILD`), not a fork: forking a
    process that already runs threads (torch's, a notebook's, a test runner's) copies locks
    those threads held, and the child can wait on them forever (seen: a malloc lock, inside
    the sentence splitter). A fresh interpreter also never re-runs the caller's script, which
    multiprocessing's spawn would. It imports no torch. Messages travel over two pipes as
    pickles between our own two processes.
    """

    def __init__(self, spec: CorpusSpec, filters: FilterConfig, prefetch: int = 0) -> None:
        self.spec, self.filters = spec, filters
        plan_r, plan_w = os.pipe()  # parent -> child: what to read, then the plan
        data_r, data_w = os.pipe()  # child -> parent: windows, then the stats
        root = str(Path(__file__).resolve().parents[1])  # where `pipeline` is importable from
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "RAYON_NUM_THREADS": "1",  # one tokenizer thread: the teacher keeps the cores busy
        }
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(plan_r), str(data_w), str(os.getpid())],
                pass_fds=(plan_r, data_w),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(plan_r)
            os.close(data_w)
        self._control = Connection(plan_w, readable=False)
        self._data = Connection(data_r, writable=False)
        self._control.send((spec, filters, prefetch))

    def __enter__(self) -> CorpusReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def windows(self, plan: ReadPlan) -> Iterator[Window | CorpusStats]:
        assert plan.spec == self.spec and plan.filters == self.filters
        self._control.send(plan)
        while True:
            if not self._data.poll(5.0):
                if self._child.poll() is not None:
                    self._died()
                continue
            try:
                kind, payload = self._data.recv()
            except (EOFError, OSError):
                self._child.wait(timeout=5)
                self._died()
            if kind == "window":
                yield payload
            elif kind == "stats":
                yield CorpusStats(**payload)
                return
            else:
                raise SraError(payload)

    def _died(self) -> None:
        raise SraError(
            f"the corpus reader process died (exit code {self._child.returncode}); "
            "rerun the same command to resume"
        ) from None

    def close(self) -> None:
        for conn in (self._control, self._data):
            conn.close()  # a child blocked writing gets a broken pipe and exits
        if self._child.poll() is None:
            self._child.terminate()
        try:
            self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()


def _produce(control: Connection, out: Connection, parent: int) -> None:
    """The child's work: read until the plan comes, then send the plan's windows and stats."""
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    # Ctrl-C reaches the whole process group: the parent handles it and ends this process,
    # which would otherwise print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def parent_gone() -> None:
        os._exit(1)

    def send(item: tuple[str, Any]) -> None:
        try:
            out.send(item)  # blocks while the parent is a window behind: the back-pressure
        except OSError:  # the parent closed its end, or died
            parent_gone()

    stats = CorpusStats()
    try:
        spec, filters, prefetch = control.recv()
        head: list[tuple[str, str]] = []
        raw = iter_sentences(spec, filters, None, stats) if prefetch else None
        plan = _wait_for_plan(control, parent, raw, head, prefetch, parent_gone)
        if plan is not None:
            started = itertools.chain(head, raw) if raw is not None else None
            for window in plan_windows(plan, stats, started):
                send(("window", window))
            send(("stats", asdict(stats)))
    except (EOFError, OSError):
        parent_gone()  # the parent went away before sending what to read
    except SraError as e:
        send(("error", str(e)))
    except Exception as e:  # any other failure still ends as one line in the parent
        send(("error", f"reading the corpus failed: {type(e).__name__}: {e}"))


def _wait_for_plan(
    control: Connection,
    parent: int,
    raw: Iterator[tuple[str, str]] | None,
    head: list[tuple[str, str]],
    prefetch: int,
    parent_gone: Any,
) -> ReadPlan | None:
    """Read ahead into `head` (up to `prefetch` sentences) until the plan comes."""
    while True:
        reading = raw is not None and len(head) < prefetch
        if control.poll(0.005 if reading else 1.0):
            return control.recv()
        if os.getppid() != parent:
            parent_gone()
        if reading:
            assert raw is not None
            chunk = list(itertools.islice(raw, min(512, prefetch - len(head))))
            head.extend(chunk)
            if not chunk:
                prefetch = len(head)  # the stream ended before the prefetch did


def child_main() -> None:
    """The reader process's entry point: ``python -c "..." PLAN_FD DATA_FD PARENT_PID``."""
    plan_fd, data_fd, parent = (int(a) for a in sys.argv[1:4])
    _produce(Connection(plan_fd, writable=False), Connection(data_fd, readable=False), parent)
