"""The run-folder rule, on its own: finished, resume, different, overwrite, foreign, legacy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache.errors import SraError
from student.runs.checkpoint import json_bytes
from student.runs.folder import RunFolder, RunKind, changed_keys, fingerprint


def _legacy(record: dict, folder: Path) -> tuple[dict, bool]:
    return record, (folder / "result.json").is_file()


KIND = RunKind(
    name="toy", run_file="toy.json", format="toy-run", outputs=("result.json",), legacy=_legacy
)
IDENTITY = {"optim": {"lr": 0.1}, "seed": 0}


def start(path: Path, identity: dict = IDENTITY, overwrite: bool = False):  # type: ignore[no-untyped-def]
    run = RunFolder(path, KIND)
    return run, run.prepare(identity, options={"lr": 0.1}, overwrite=overwrite)


def test_fingerprint_is_sha256_of_sorted_compact_json():
    import hashlib

    text = '{"optim":{"lr":0.1},"seed":0}'
    assert fingerprint(IDENTITY) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert fingerprint({"seed": 0, "optim": {"lr": 0.1}}) == fingerprint(IDENTITY)


def test_fresh_finished_and_rerun(tmp_path, capsys):
    run, s = start(tmp_path / "r")
    assert not s.done and s.checkpoint is None
    record = json.loads((tmp_path / "r" / "toy.json").read_text())
    assert record["status"] == "training" and record["config"] == IDENTITY
    assert record["fingerprint"] == fingerprint(IDENTITY) and record["options"] == {"lr": 0.1}
    (tmp_path / "r" / "result.json").write_text("{}")
    run.finish(summary={"steps": 3})
    assert json.loads((tmp_path / "r" / "toy.json").read_text())["summary"] == {"steps": 3}
    _, again = start(tmp_path / "r")
    assert again.done and "already holds this finished toy run" in capsys.readouterr().err


def test_unfinished_resumes_from_the_last_checkpoint(tmp_path, capsys):
    run, _ = start(tmp_path / "r")
    run.checkpoints.save(5, {"state.json": json_bytes({"step": 5, "fingerprint": run.fingerprint})})
    _, s = start(tmp_path / "r")
    assert not s.done and s.checkpoint is not None and s.checkpoint.name == "step-000000005"
    # Without a checkpoint yet: start over, and say so.
    run.checkpoints.remove()
    _, s = start(tmp_path / "r")
    assert s.checkpoint is None and "without a checkpoint" in capsys.readouterr().err


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    run, _ = start(tmp_path / "r")
    run.checkpoints.save(5, {"state.json": json_bytes({"step": 5, "fingerprint": "other"})})
    with pytest.raises(SraError, match="belongs to a different config"):
        start(tmp_path / "r")


def test_a_different_config_is_refused_naming_it_unless_overwrite(tmp_path):
    run, _ = start(tmp_path / "r")
    (tmp_path / "r" / "result.json").write_text("{}")
    (tmp_path / "r" / "notes.txt").write_text("mine")
    other = {"optim": {"lr": 0.2}, "seed": 0}
    with pytest.raises(SraError, match=r"different toy run \(differs in: optim\.lr\)"):
        start(tmp_path / "r", other)
    _, s = start(tmp_path / "r", other, overwrite=True)
    assert not s.done
    assert not (tmp_path / "r" / "result.json").exists()  # the run's own outputs went
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # nothing else did
    assert json.loads((tmp_path / "r" / "toy.json").read_text())["config"] == other


def test_overwrite_retrains_a_finished_run_of_the_same_config(tmp_path):
    run, _ = start(tmp_path / "r")
    run.finish()
    _, s = start(tmp_path / "r", overwrite=True)
    assert not s.done and json.loads((tmp_path / "r" / "toy.json").read_text())["status"] == (
        "training"
    )


def test_foreign_and_unreadable_folders(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(SraError, match="holds no toy.json, so it is not a toy run"):
            start(tmp_path / "f", overwrite=overwrite)
    assert (tmp_path / "f" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(SraError, match="is a file"):
        start(tmp_path / "file")
    start(tmp_path / "bad")
    (tmp_path / "bad" / "toy.json").write_bytes(b"\xff{")
    with pytest.raises(SraError, match="unreadable"):
        start(tmp_path / "bad")
    assert not start(tmp_path / "bad", overwrite=True)[1].done


def test_a_run_file_from_before_the_shared_format_is_read(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "toy.json").write_text(json.dumps(IDENTITY))  # the identity was the whole file
    _, s = start(folder)
    assert not s.done  # no result: unfinished, resumed (and upgraded to the shared format)
    assert json.loads((folder / "toy.json").read_text())["format"] == "toy-run"
    (folder / "toy.json").write_text(json.dumps(IDENTITY))
    (folder / "result.json").write_text("{}")
    assert start(folder)[1].done


def test_changed_keys_are_dotted_paths():
    old = {"a": 1, "b": {"c": 2, "d": 3}}
    assert changed_keys(old, {"a": 1, "b": {"c": 2, "d": 4}, "e": 0}) == ["b.d", "e"]
