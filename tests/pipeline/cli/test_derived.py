"""Derived commands: every option is a config field with the same default, the names of
every earlier version still work, and a value out of range is one line naming its option."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from cache.options import default_of, flag_of, is_internal, is_nested
from pipeline.cli import app
from pipeline.cli.stage_one import EmbedCommand
from pipeline.tasks.evaluate import EvaluateConfig
from pipeline.tasks.predict import PredictConfig
from pipeline.tasks.teacher_finetune import TeacherFinetuneConfig
from student.finetuning.config import FinetuneConfig
from student.sts import StsConfig
from student.training.config import TrainConfig
from student.training.report import ReportConfig
from tests.conftest import REPO

DERIVED = {
    "embed": EmbedCommand,
    "train": TrainConfig,
    "report": ReportConfig,
    "eval-sts": StsConfig,
    "finetune": FinetuneConfig,
    "evaluate": EvaluateConfig,
    "teacher-finetune": TeacherFinetuneConfig,
    "predict": PredictConfig,
}

# Every option name each command took before its options were derived from its config.
EARLIER = {
    "train": "--cache --out --pooling --epochs --max-steps --batch-size --token-budget --lr "
    "--seed --init-embeddings --hidden-size --embedding-dim --layers --student-pooling "
    "--dropout --projection-hidden --val-fraction --val-max-rows --cos-weight "
    "--normalize-targets --no-normalize-targets --lm-weight --lm-samples --rf-weight "
    "--rf-level --warmup --decay --weight-decay --grad-clip --bf16 --no-bf16 --device "
    "--workers --shuffle-buffer --eval-every --checkpoint-every --log-every --resume "
    "--no-resume --overwrite --no-overwrite --progress --no-progress",
    "finetune": "--student --task --cache --out --epochs --batch-size --lr --encoder-lr --seed "
    "--freeze-encoder --head --head-hidden --dropout --encoder-dropout --sra-weight "
    "--distill-weight --distill-loss --temperature --label-weight --augmented --no-augmented "
    "--pooling --select --patience --bf16 --no-bf16 --device --resume --overwrite --progress "
    "--no-progress",
    "teacher-finetune": "--task --out --teacher --glue-dir --epochs --batch-size --lr "
    "--max-length --seed --bf16 --no-bf16 --device --save-every --resume --overwrite "
    "--trust-remote-code --no-trust-remote-code --progress --no-progress",
    "evaluate": "--student --tasks --seeds --rows --glue-dir --caches --out --epochs "
    "--encoder-lr --teachers --augment --progress --no-progress",
    "eval-sts": "--student --data --teacher-cache --pooling --json --batch-size",
}


def commands() -> dict[str, Any]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def fields(cls: type) -> list[dataclasses.Field[Any]]:
    """Every leaf field of a (nested) config, internal ones included."""
    out = []
    for f in dataclasses.fields(cls):
        out += fields(f.default_factory) if is_nested(f) else [f]  # type: ignore[arg-type]
    return out


def shown(default: Any) -> Any:
    """A default as the command line holds it: lists as comma text."""
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    return default


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_every_field_is_an_option_with_its_default(name):
    params = {p.name: p for p in commands()[name].params}
    for f in fields(DERIVED[name]):
        param = params.get(flag_of(f).replace("-", "_"))
        if is_internal(f):
            assert param is None or param.name in {  # another field's option of that name
                flag_of(g).replace("-", "_") for g in fields(DERIVED[name]) if not is_internal(g)
            }, f.name
            continue
        assert param is not None, f"{name}: {f.name} has no option"
        default = default_of(f)
        if default is dataclasses.MISSING:
            assert param.required, f"{name}: {f.name} is required"
        else:
            assert param.default == shown(default), (name, f.name, param.default, default)
        if f.metadata.get("argument"):
            assert param.param_type_name == "argument", f.name
        else:
            assert f"--{flag_of(f)}" in param.opts, (name, f.name, param.opts)
    # ... and nothing else: an option is a field.
    leaves = {flag_of(f).replace("-", "_") for f in fields(DERIVED[name]) if not is_internal(f)}
    extra = {"embed": {"outputs"}}.get(name, set())
    assert set(params) == leaves | extra


@pytest.mark.parametrize("name", sorted(EARLIER))
def test_every_earlier_option_name_still_works(name):
    names = {o for p in commands()[name].params for o in [*p.opts, *p.secondary_opts]}
    missing = set(EARLIER[name].split()) - names
    assert not missing, f"{name} lost {sorted(missing)}"
    report = {p.name for p in commands()["report"].params if p.param_type_name == "argument"}
    assert report == {"run"}


def pipeline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--shuffle-buffer", "0"], "error: --shuffle-buffer must be >= 1, got 0"),
        (["--val-max-rows", "0"], "error: --val-max-rows must be >= 1, got 0"),
    ],
)
def test_train_range_errors_are_one_line_from_the_real_command(tmp_path, option, message):
    out = tmp_path / "run"
    result = pipeline("train", "--cache", str(tmp_path / "c"), "--out", str(out), *option)
    assert result.returncode == 1
    assert result.stderr.strip() == message
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "options", "message"),
    [
        ("train", ["--workers", "-1"], "--workers must be >= 0, got -1"),
        ("train", ["--cos-weight", "-1"], "--cos-weight must be a number >= 0, got -1.0"),
        ("train", ["--grad-clip", "0"], "--grad-clip must be > 0, got 0.0"),
        ("train", ["--warmup", "1"], "--warmup must be in [0, 1), got 1.0"),
        ("train", ["--lm-weight", "1", "--layers", "2"], "--lm-weight needs --layers 1"),
        ("train", ["--resume", "--overwrite"], "--resume and --overwrite contradict"),
        ("finetune", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        ("finetune", ["--weight-decay", "-1"], "--weight-decay must be >= 0, got -1.0"),
        ("finetune", ["--task", " "], "--task must not be empty"),
        ("teacher-finetune", ["--task", "nope"], "unknown GLUE task 'nope'"),
        ("teacher-finetune", ["--text-column", "body"], "--text-column read an own task"),
        ("teacher-finetune", ["--task", "task:data/x", "--glue-dir", "g"], "--glue-dir reads GLUE"),
        ("evaluate", ["--tasks", "sst2,task:"], "name the task's folder, task:PATH"),
        ("predict", ["--chunk-rows", "0"], "--chunk-rows must be >= 1, got 0"),
        ("predict", ["--output", "o.xlsx"], "--output o.xlsx: unknown format"),
        ("teacher-finetune", ["--save-every", "0"], "--save-every must be >= 1, got 0"),
        ("teacher-finetune", ["--grad-clip", "0"], "--grad-clip must be > 0, got 0.0"),
        ("evaluate", ["--seeds", "0"], "--seeds must be >= 1, got 0"),
        ("eval-sts", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ],
)
def test_range_errors_name_the_one_option(tmp_path, command, options, message):
    from typer.testing import CliRunner

    required = {
        "train": ["--cache", "c", "--out", str(tmp_path / "o")],
        "finetune": ["--student", "s", "--task", "sst2", "--cache", "c", "--out", "o"],
        "teacher-finetune": ["--task", "sst2", "--out", str(tmp_path / "o")],
        "evaluate": ["--student", "s"],
        "eval-sts": ["--student", "s", "--data", "d"],
        "predict": ["--model", "m", "--input", __file__, "--output", str(tmp_path / "o")],
    }[command]
    # An option given twice takes its last value: `options` may override a required one.
    result = CliRunner().invoke(app, [command, *required, *options])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not Path(tmp_path / "o").exists()
