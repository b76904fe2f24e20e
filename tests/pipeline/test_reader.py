"""The corpus reader process (pipeline/reader.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pipeline.corpus import CorpusSpec
from pipeline.reader import CHILD, CorpusReader
from pipeline.sentences import FilterConfig
from tests.conftest import embed_any, write_corpus


def test_the_reader_is_a_fresh_interpreter_not_a_fork(tmp_path: Path) -> None:
    """A fork copies the locks other threads hold (torch's, a notebook's, pytest's) and the
    child can wait on one forever: the whole suite once hung so, in the sentence splitter."""
    corpus = write_corpus(tmp_path / "c.txt", 50)
    with CorpusReader(CorpusSpec(str(corpus)), FilterConfig(), prefetch=10) as reader:
        child = reader._child
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # between fork and exec the command line is empty
            command = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")
            if CHILD.encode() in command:
                break
            time.sleep(0.05)
        assert CHILD.encode() in command, command
    assert child.returncode is not None  # closed and reaped with the reader


@pytest.mark.slow
def test_embed_from_a_process_busy_with_threads(tmp_path: Path, tiny_bert: Path) -> None:
    """embed() from Python while other threads allocate and hold locks, as in a notebook."""
    stop = threading.Event()
    held = threading.Lock()

    def busy() -> None:
        with held:
            while not stop.is_set():
                _ = [bytearray(4096) for _ in range(64)]

    threads = [threading.Thread(target=busy, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        corpus = write_corpus(tmp_path / "c.txt", 300)
        manifest = embed_any(
            corpus=str(corpus),
            out=tmp_path / "cache",
            teacher=str(tiny_bert),
            window=64,
            progress=False,
            dtype="fp32",
        )
        assert manifest.status == "complete" and manifest.totals["rows"] > 0
    finally:
        stop.set()
        for t in threads:
            t.join()
