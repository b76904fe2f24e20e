"""The stage-two commands as a user runs them: one-line errors, report, no teacher, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from cache import CacheWriter, open_cache
from student import StudentEncoder
from student.training.config import DataConfig
from student.training.validation import compute_split
from tests.conftest import REPO, make_cache

TINY = ["--hidden-size", "16", "--embedding-dim", "16", "--batch-size", "32"]
TINY += ["--token-budget", "800", "--val-fraction", "0.05", "--no-bf16", "--no-progress"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_cache(tmp_path_factory.mktemp("cli"), tiny_bert)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from pipeline.cli import app

    return app


def invoke(app: typer.Typer, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def error_line(result) -> str:  # type: ignore[no-untyped-def]
    """Bad input ends as exactly one `error:` line and exit status 1, never a traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def pipeline_command(tmp_path: Path) -> list[str]:
    """The arguments that run the `pipeline` command with this interpreter."""
    return ["-m", "pipeline"]


def test_help_has_examples(app):
    for command in ("train", "report", "eval-sts"):
        result = invoke(app, command, "--help")
        assert result.exit_code == 0 and "Example: pipeline" in result.stdout, command


def test_train_then_report(app, cache_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--cache", str(cache_dir), "--out", str(run), "--max-steps", "12"]
    result = invoke(app, *args, "--eval-every", "4", *TINY)
    assert result.exit_code == 0, result.output
    assert "student saved" in result.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["optim"]["max_steps"] == 12 and info["status"] == "complete"

    result = invoke(app, "report", str(run))
    assert result.exit_code == 0, result.output
    for name in ("loss.png", "fidelity.png", "report.md"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run / "report.md").read_text()
    assert "final val cosine" in report and "![fidelity.png](fidelity.png)" in report

    # Same folder, another config: refused, in one line, naming what differs.
    line = error_line(invoke(app, *args, "--lr", "0.1", *TINY))
    assert "holds a different training run (differs in: optim.lr)" in line
    line = error_line(invoke(app, *args, "--lr", "0.1", "--resume", *TINY))
    assert "differs in: optim.lr" in line
    line = error_line(invoke(app, "report", str(tmp_path)))
    assert "run.json is missing" in line


def _copy(cache_dir: Path, dest: Path) -> Path:
    shutil.copytree(cache_dir, dest)
    return dest


def _cache_without_input_ids(path: Path) -> Path:
    schema = pa.schema(
        [("id", pa.int64()), ("text", pa.string()), ("mean", pa.list_(pa.float32(), 4))]
    )
    config = {"teacher": {"name": "x", "hidden_size": 4, "poolings": ["mean"]}}
    with CacheWriter(path, config, schema) as writer:
        table = pa.table(
            {
                "id": pa.array([0, 1], pa.int64()),
                "text": ["a b", "c d"],
                "mean": pa.array([[0.0] * 4, [1.0] * 4], pa.list_(pa.float32(), 4)),
            },
            schema=schema,
        )
        writer.write(table, 0)
        writer.finish()
    return path


def test_bad_caches_are_one_line(app, cache_dir, tmp_path):
    incomplete = _copy(cache_dir, tmp_path / "incomplete")
    manifest = json.loads((incomplete / "manifest.json").read_text())
    manifest["status"] = "in_progress"
    (incomplete / "manifest.json").write_text(json.dumps(manifest))

    corrupt = _copy(cache_dir, tmp_path / "corrupt")
    shard = corrupt / "shard-00001.arrow"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    cases = {
        "missing": (tmp_path / "nowhere", [], "does not exist"),
        "incomplete": (incomplete, [], "incomplete"),
        "corrupt": (corrupt, [], "shard-00001.arrow"),
        "pooling": (cache_dir, ["--pooling", "cls"], "has no 'cls' vectors (it has mean)"),
        "no ids": (_cache_without_input_ids(tmp_path / "noids"), [], "no input_ids column"),
        "option": (cache_dir, ["--student-pooling", "min"], "--student-pooling must be one of"),
    }
    for name, (cache, extra, expected) in cases.items():
        out = tmp_path / f"run-{name.replace(' ', '-')}"
        line = error_line(invoke(app, "train", "--cache", str(cache), "--out", str(out), *extra))
        assert expected in line, (name, line)
        assert not out.exists(), name  # refused before the run folder was made


@pytest.mark.slow
def test_train_and_encode_without_transformers(cache_dir, tmp_path):
    """Stage two never needs the teacher: train and encode where `import transformers` fails."""
    blocker = tmp_path / "blocker" / "transformers"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('transformers is blocked here')\n")
    run = tmp_path / "run"
    command = pipeline_command(tmp_path)
    args = ["train", "--cache", str(cache_dir), "--out", str(run), "--max-steps", "4", *TINY]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO)]),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, *command, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = textwrap.dedent(
        f"""
        import sys
        from student import StudentEncoder
        import pipeline.cli, pipeline.cli.stage_two  # the CLI modules import no teacher either
        vecs = StudentEncoder.from_pretrained({str(run)!r}).encode(["A cat sat.", "A dog ran."])
        assert vecs.shape == (2, 32), vecs.shape
        assert "transformers" not in sys.modules
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("OK")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp(cache_dir, tmp_path):
    run = tmp_path / "run"
    command = pipeline_command(tmp_path)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-port", str(_free_port()), *command]
    args = ["train", "--cache", str(cache_dir), "--out", str(run), "--max-steps", "6"]
    args += ["--checkpoint-every", "3", "--eval-every", "3", "--log-every", "1", *TINY]
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["layout"]["world_size"] == 2 and info["status"] == "complete"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3, 4, 5, 6]
    val = [x for x in lines if "val_cos" in x]
    # Ranks validate disjoint halves of the held-out rows and add up their sums.
    split = compute_split(open_cache(cache_dir), DataConfig(val_fraction=0.05))
    assert [x["step"] for x in val] == [3, 6] and val[-1]["val_rows"] == split.evaluated
    assert StudentEncoder.from_pretrained(run).encode("A cat.").shape == (32,)
