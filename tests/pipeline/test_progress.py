"""Progress off a terminal: plain periodic log lines with rates and an ETA."""

from __future__ import annotations

import pytest

from pipeline.progress import EmbedProgress


def test_plain_log_lines_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with EmbedProgress(total=1000, every=0.0) as p:
        p.update(100, 3000, shards=1)
        p.update(100, 3000, shards=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[-1].startswith("embed: 200/1,000 sentences")
    assert "sent/s" in lines[-1] and "tok/s" in lines[-1] and "2 shards" in lines[-1]
    assert "ETA" in lines[-1]
    assert p.steady_rate is not None and p.steady_rate > 0


def test_disabled_progress_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    with EmbedProgress(total=None, every=0.0, enabled=False) as p:
        p.update(10, 10)
    assert capsys.readouterr().err == ""
