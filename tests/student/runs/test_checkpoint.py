"""Checkpoints: atomic folders, latest.json, the old one-folder layout, and a full disk."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import student.runs.checkpoint as checkpoint_module
from cache.errors import SraError
from student.runs.checkpoint import Checkpoints, json_bytes, read_state


def files(step: int) -> dict[str, bytes]:
    return {"weights.bin": bytes([step]) * 10, "state.json": json_bytes({"step": step})}


def disk_full_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The writer fails with ENOSPC from its ``n``-th file on."""
    real, calls = checkpoint_module.write_file, {"n": 0}

    def write(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(checkpoint_module, "write_file", write)


def test_save_latest_and_older_ones_dropped(tmp_path):
    ckpt = Checkpoints(tmp_path)
    assert ckpt.latest() is None and ckpt.latest_step() == 0
    ckpt.save(3, files(3))
    ckpt.save(7, files(7))
    assert ckpt.latest() == tmp_path / "checkpoint" / "step-000000007"
    assert ckpt.latest_step() == 7 and read_state(ckpt.latest())["step"] == 7
    assert sorted(p.name for p in ckpt.folder.iterdir()) == ["latest.json", "step-000000007"]
    with pytest.raises(ValueError, match="state.json"):
        ckpt.save(8, {"weights.bin": b""})


def test_the_one_folder_layout_of_earlier_fine_tuning_still_loads(tmp_path):
    old = tmp_path / "checkpoint"
    old.mkdir()
    (old / "state.json").write_text(json.dumps({"epoch": 2, "step": 40}))
    assert Checkpoints(tmp_path).latest() == old and Checkpoints(tmp_path).latest_step() == 40


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch):
    ckpt = Checkpoints(tmp_path)
    ckpt.save(3, files(3))
    disk_full_after(monkeypatch, 1)  # the second file of the next checkpoint fails
    with pytest.raises(SraError) as info:
        ckpt.save(7, files(7))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "checkpoint" / "step-000000007") in message
    assert "No space left on device" in message
    assert "previous checkpoint" in message and "intact" in message
    assert "rerun the same command to resume" in message
    assert isinstance(info.value.__cause__, OSError)
    # The partial folder is gone; the previous checkpoint is whole and still the latest.
    assert sorted(p.name for p in ckpt.folder.iterdir()) == ["latest.json", "step-000000003"]
    assert ckpt.latest_step() == 3
    assert (ckpt.latest() / "weights.bin").read_bytes() == bytes([3]) * 10


def test_a_full_disk_during_training_stops_it_in_one_line(tmp_path, monkeypatch, tiny_bert):
    from student import train
    from tests.conftest import make_cache
    from tests.student.conftest import tiny_train

    cache = make_cache(tmp_path / "cache", tiny_bert, n=200)
    run = tmp_path / "run"
    real_save, saves = Checkpoints.save, {"n": 0}

    def save(self, step, files):  # type: ignore[no-untyped-def]
        saves["n"] += 1
        if saves["n"] == 2:
            disk_full_after(monkeypatch, 0)
        return real_save(self, step, files)

    monkeypatch.setattr(Checkpoints, "save", save)
    with pytest.raises(SraError, match=r"cannot write checkpoint .*step-000000004 .*intact"):
        train(tiny_train(cache, run, max_steps=6, checkpoint_every=2))
    monkeypatch.undo()
    assert json.loads((run / "checkpoint" / "latest.json").read_text()) == {"dir": "step-000000002"}
    assert [p.name for p in (run / "checkpoint").iterdir() if p.name.startswith(".")] == []
    # Space again: the same command resumes from step 2 and finishes.
    train(tiny_train(cache, run, max_steps=6, checkpoint_every=2))
    assert json.loads((run / "run.json").read_text())["summary"]["steps"] == 6
