"""One rule for an existing --out, the same for `train`, `finetune` and `teacher-finetune`:

finished, same config -> exit 0, says done, nothing retrained; interrupted -> the same command
resumes; another config -> one line naming what differs; --overwrite -> trains again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import make_cache, make_task_cache
from tests.student.conftest import make_small_student

pytestmark = pytest.mark.slow


class Interrupted(Exception):
    """Stands for a kill right after a checkpoint."""


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def check_protocol(
    args: list[str],
    out: Path,
    output: str,
    other: list[str],
    differs: str,
    interrupt: Callable[[pytest.MonkeyPatch], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule on one command: ``output`` is a file its run writes at the end, ``other`` an
    option that changes the config (``differs``: the key the refusal names), ``interrupt``
    patches the command's checkpoint writer to stop it after its first checkpoint."""
    # Interrupted after a checkpoint, then the same command: it resumes and finishes.
    interrupt(monkeypatch)
    result = invoke(*args)
    assert isinstance(result.exception, Interrupted), result.output
    monkeypatch.undo()
    assert not (out / output).exists()
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr
    assert (out / output).is_file() and not (out / "checkpoint").exists()

    # Finished, same config: exit 0, says so, trains nothing.
    before = (out / output).stat().st_mtime_ns
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "already holds this finished" in result.stderr
    assert (out / output).stat().st_mtime_ns == before

    # Another config: one line naming what differs, nothing touched.
    result = invoke(*args, *other)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert f"differs in: {differs}" in lines[0] and "--overwrite" in lines[0]
    assert (out / output).stat().st_mtime_ns == before

    # --overwrite: trained again, under the new config.
    result = invoke(*args, *other, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / output).stat().st_mtime_ns != before


def stop_after_first(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
    real = getattr(module, name)

    def save_then_stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        real(*args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(module, name, save_then_stop)


def test_train(tmp_path, tiny_bert, monkeypatch):
    import student.training.loop as loop

    cache = make_cache(tmp_path / "cache", tiny_bert, n=200)
    out = tmp_path / "run"
    args = ["train", "--cache", str(cache), "--out", str(out), "--max-steps", "6"]
    args += ["--checkpoint-every", "3", "--hidden-size", "8", "--embedding-dim", "8"]
    args += ["--no-bf16", "--no-progress"]
    check_protocol(
        args,
        out,
        "model.safetensors",
        ["--lr", "0.01"],
        "optim.lr",
        lambda mp: stop_after_first(mp, loop, "save_state"),
        monkeypatch,
    )


def test_finetune(tmp_path, tiny_bert, tiny_glue, monkeypatch):
    import student.finetuning.loop as loop

    cache = make_task_cache(tmp_path, tiny_bert, "sst2", tiny_glue)
    student = make_small_student(cache, tmp_path / "student")
    out = tmp_path / "ft"
    args = ["finetune", "--student", str(student), "--task", "sst2", "--cache", str(cache)]
    args += ["--out", str(out), "--epochs", "2", "--no-bf16", "--no-progress"]
    check_protocol(
        args,
        out,
        "metrics.json",
        ["--batch-size", "32"],
        "options.batch_size",
        lambda mp: stop_after_first(mp, loop, "save_checkpoint"),
        monkeypatch,
    )
    info = json.loads((out / "finetune.json").read_text())
    assert info["status"] == "complete" and info["config"]["options"]["batch_size"] == 32


def test_teacher_finetune(tmp_path, tiny_bert, tiny_glue, monkeypatch):
    import pipeline.tasks.teacher_finetune as tf

    out = tmp_path / "teacher"
    args = ["teacher-finetune", "--task", "sst2", "--out", str(out), "--teacher", str(tiny_bert)]
    args += ["--glue-dir", str(tiny_glue), "--epochs", "1", "--batch-size", "16"]
    args += ["--save-every", "4", "--no-bf16", "--no-progress"]
    check_protocol(
        args,
        out,
        "metrics.json",
        ["--lr", "1e-4"],
        "lr",
        lambda mp: stop_after_first(mp, tf, "_save_checkpoint"),
        monkeypatch,
    )
