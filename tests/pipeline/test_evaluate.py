"""`pipeline evaluate`: builds missing task caches, runs every row x task x seed, one table."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
from typer.testing import CliRunner

from cache.errors import SraError
from pipeline.cli import app
from pipeline.tasks.evaluate import DEFAULT_ROWS as ROWS
from pipeline.tasks.evaluate import EvaluateConfig, evaluate
from tests.conftest import (
    distil_tiny_student,
    own_task_rows,
    write_glue,
    write_own_task,
    write_table,
)


@pytest.fixture(scope="module")
def student_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return distil_tiny_student(tmp_path_factory.mktemp("eval-student"), tiny_bert, 200, 5)


@pytest.mark.slow
def test_evaluate_builds_caches_and_prints_every_row(tmp_path, student_run, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    glue = write_glue(tmp_path / "glue", n_train=48, n_dev=16)
    cfg = EvaluateConfig(
        student=str(student_run),
        tasks=["sst2", "stsb"],
        seeds=2,
        glue_dir=str(glue),
        caches=tmp_path / "caches",
        out=tmp_path / "eval",
        epochs=1,
        progress=False,
    )
    summary = evaluate(cfg)
    # Task caches were built with the student's own (tiny) teacher.
    assert sorted(p.name for p in (tmp_path / "caches").iterdir()) == [
        f"{t}-{Path(json.loads((student_run / 'config.json').read_text())['teacher']).name}"
        for t in ("sst2", "stsb")
    ]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert set(results) == {"sst2", "stsb"}
    assert set(results["sst2"]) == set(ROWS)
    assert all(len(v) == 2 for v in results["stsb"]["scratch"].values())
    assert set(results["stsb"]["sra"]) == {"pearson", "spearman"}
    lines = summary["table"].splitlines()
    assert len(lines) == 2 + len(ROWS)
    assert lines[0].count("|") == 5  # model, two tasks, avg
    assert all(" ± " in line for line in lines[2:])
    assert (tmp_path / "eval" / "results.md").read_text().strip() == summary["table"]

    # A second evaluation reuses every finished run: same numbers.
    assert evaluate(cfg)["results"] == summary["results"]


def test_cli_bad_input(tmp_path, student_run):
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--student", str(student_run), "--tasks", "nope"])
    assert result.exit_code == 1 and "error: unknown GLUE task" in result.output
    result = runner.invoke(
        app,
        [
            "finetune",
            "--student",
            str(tmp_path),
            "--task",
            "sst2",
            "--cache",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1
    assert "error:" in result.output


@pytest.mark.slow
def test_task_specific_rows_make_the_teacher_and_its_cache(tmp_path, student_run, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    glue = write_glue(tmp_path / "glue", n_train=48, n_dev=16)
    rows = ["scratch", "tang", "sra-tsd", "teacher-ft"]
    cfg = EvaluateConfig(
        student=str(student_run),
        tasks=["mrpc"],
        seeds=1,
        rows=rows,
        glue_dir=str(glue),
        caches=tmp_path / "caches",
        teachers=tmp_path / "teachers",
        out=tmp_path / "eval",
        epochs=1,
        augment=2,
        encoder_lr=3e-4,
        progress=False,
    )
    summary = evaluate(cfg)
    slug = Path(json.loads((student_run / "config.json").read_text())["teacher"]).name
    teacher = tmp_path / "teachers" / f"mrpc-{slug}"
    assert (teacher / "model.safetensors").is_file() and (teacher / "metrics.json").is_file()
    assert (tmp_path / "caches" / f"mrpc-mrpc-{slug}-aug2" / "task.json").is_file()
    results = summary["results"]["mrpc"]
    assert list(results) == rows
    # The teacher row is scored from the cached dev logits: the teacher's own dev metrics.
    want = json.loads((teacher / "metrics.json").read_text())
    assert results["teacher-ft"]["f1"] == [pytest.approx(want["f1"], abs=1e-6)]
    run = json.loads((tmp_path / "eval" / "mrpc" / "tang" / "seed0" / "finetune.json").read_text())
    options = run["config"]["options"]  # the options that make the run's identity
    assert options["distill_weight"] == 1.0 and run["student"] == "scratch"
    assert "encoder_lr" not in options  # a random init has nothing to keep
    run = json.loads(
        (tmp_path / "eval" / "mrpc" / "sra-tsd" / "seed0" / "finetune.json").read_text()
    )
    assert run["config"]["options"]["encoder_lr"] == 3e-4
    assert len(summary["table"].splitlines()) == 2 + len(rows)
    # Another teacher folder of the same name (intermediate-task training, say) must not reuse
    # this teacher's cache: the names match, the weights and so the logits do not.
    other = tmp_path / "other-teachers" / teacher.name
    shutil.copytree(teacher, other)
    weights = safetensors.torch.load_file(other / "model.safetensors")
    safetensors.torch.save_file(
        {k: v + 0.01 for k, v in weights.items()}, other / "model.safetensors"
    )
    with pytest.raises(SraError, match="holds the logits of .* pass another --caches"):
        evaluate(replace(cfg, teachers=other.parent))


@pytest.mark.slow
def test_own_tasks_sit_beside_glue_in_one_table(tmp_path, student_run, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    glue = write_glue(tmp_path / "glue", n_train=48, n_dev=16)
    tickets = write_own_task(tmp_path / "data", "tickets", n_train=48, n_dev=16)
    rows = ["sra", "scratch", "teacher-frozen"]
    cfg = EvaluateConfig(
        student=str(student_run),
        tasks=["sst2", f"task:{tickets}"],
        seeds=1,
        rows=rows,
        glue_dir=str(glue),
        caches=tmp_path / "caches",
        out=tmp_path / "eval",
        epochs=1,
        progress=False,
    )
    summary = evaluate(cfg)
    slug = Path(json.loads((student_run / "config.json").read_text())["teacher"]).name
    assert (tmp_path / "caches" / f"tickets-{slug}" / "task.json").is_file()
    results = summary["results"]
    assert list(results) == ["sst2", "tickets"] and list(results["tickets"]) == rows
    assert set(results["tickets"]["scratch"]) == {"micro_f1", "macro_f1"}
    assert summary["tasks"]["tickets"] == f"task:{tickets}"
    header = summary["table"].splitlines()[0]
    assert "sst2 accuracy" in header and "tickets micro_f1/macro_f1" in header
    run = tmp_path / "eval" / "tickets" / "sra" / "seed0"
    assert (run / "task_model.json").is_file()  # every student row is a loadable model
    assert evaluate(cfg)["results"] == results  # finished runs are reused

    # Other data under the same task name is not this cache: refused, never mixed up.
    write_table(tickets / "train.jsonl", own_task_rows("tickets", 48, seed=7))
    with pytest.raises(SraError, match="holds a cache of other tickets data"):
        evaluate(cfg)


@pytest.mark.slow
def test_task_specific_rows_on_an_own_task_one_teacher_per_seed(tmp_path, student_run, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    scores = write_own_task(tmp_path / "data", "scores", n_train=48, n_dev=16)
    rows = ["tang", "teacher-ft"]
    cfg = EvaluateConfig(
        student=str(student_run),
        tasks=[f"task:{scores}"],
        seeds=2,
        rows=rows,
        caches=tmp_path / "caches",
        teachers=tmp_path / "teachers",
        out=tmp_path / "eval",
        epochs=1,
        augment=1,
        progress=False,
    )
    summary = evaluate(cfg)
    slug = Path(json.loads((student_run / "config.json").read_text())["teacher"]).name
    teachers = [
        tmp_path / "teachers" / f"scores-{slug}",
        tmp_path / "teachers" / f"scores-{slug}-seed1",
    ]
    want = [json.loads((t / "metrics.json").read_text())["pearson"] for t in teachers]
    assert summary["results"]["scores"]["teacher-ft"]["pearson"] == want
    config = json.loads((teachers[0] / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["finetuning_task"] == "scores"
    assert (tmp_path / "caches" / f"scores-scores-{slug}-aug1" / "logits-train.arrow").is_file()
    assert len(summary["results"]["scores"]["tang"]["pearson"]) == 2
