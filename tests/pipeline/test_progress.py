"""Progress off a terminal: plain lines with rates once they mean something, and a heartbeat
that says what the run is doing while nothing is counted (teacher load, compilation)."""

from __future__ import annotations

import time

import pytest

import pipeline.progress as progress_mod
from pipeline.progress import EmbedProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_show_rates_only_after_warm_up(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    with EmbedProgress(every=0.0) as p:
        p.start(total=1000)
        clock.now += 20  # the first batch: compilation, kernel selection
        p.update(100, 3000, shards=0)
        clock.now += 1
        p.update(100, 3000, shards=1)  # one second after the first batch: too early for a rate
        clock.now += 4
        p.update(100, 3000, shards=2)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("embed: ")]
    assert lines[0].startswith("embed: 100/1,000 sentences · measuring speed")
    assert "measuring speed" in lines[1] and "ETA" not in lines[1]
    # 200 sentences in the 5 s after the first batch: 40 sent/s, not 300 / 25 s.
    assert lines[2].startswith("embed: 300/1,000 sentences · 40 sent/s · 1,200 tok/s · 2 shards")
    assert "ETA 18s" in lines[2]
    assert p.steady_rate == pytest.approx(40.0)


def test_heartbeat_says_what_the_run_waits_for(capsys: pytest.CaptureFixture[str]) -> None:
    with EmbedProgress(every=0.05) as p:
        p.phase("loading the teacher")
        time.sleep(0.4)  # the main thread is busy: the heartbeat speaks for it
        p.start(total=None)
        p.phase("compiling the teacher")
        time.sleep(0.4)
    err = capsys.readouterr().err
    assert "embed: loading the teacher" in err
    assert "embed: still loading the teacher (" in err
    assert "embed: still compiling the teacher (" in err


def test_heartbeat_repeats_the_count_between_slow_batches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with EmbedProgress(every=0.05) as p:
        p.start(total=50)
        p.update(10, 100)
        time.sleep(0.4)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("embed: 10/50")]
    assert len(lines) >= 2


def test_disabled_progress_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    with EmbedProgress(every=0.0, enabled=False) as p:
        p.phase("loading the teacher")
        p.start(total=None)
        p.update(10, 10)
        time.sleep(0.05)
    assert capsys.readouterr().err == ""
