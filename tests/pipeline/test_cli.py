"""The `pipeline` command as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cache import open_cache
from tests.conftest import REPO, assert_same_cache, write_corpus

TINY = ["--window", "64", "--shard-rows", "150", "--no-progress"]


# One torch thread: tiny teachers run fastest so, and far faster when other jobs share the cores.
ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = os.environ | ENV | kw.pop("env", {})
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Bad input ends as exactly one `error:` line and exit status 1, never a traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_every_command_has_help_with_an_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (fast); the subprocess test below checks the width a pipe really gets."""
    import typer.rich_utils
    from typer.testing import CliRunner

    from pipeline.cli import PIPED_HELP_WIDTH, app

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", PIPED_HELP_WIDTH)
    commands = [
        ["embed"],
        ["inspect"],
        ["sql"],
        ["verify"],
        ["bench", "embed"],
        ["bench", "startup"],
        ["train"],
        ["report"],
        ["eval-sts"],
    ]
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example: pipeline" in result.output, command
        assert "…" not in result.output, f"help of {command} is cut off when piped"


def test_piped_help_names_every_option_in_full() -> None:
    from pipeline.cli.options import leaves
    from pipeline.cli.stage_one import EmbedCommand

    out = cli("embed", "--help").stdout
    flags = [f"--{leaf.param.replace('_', '-')}" for leaf in leaves(EmbedCommand)]
    hidden = {"--dedup-slots"}
    assert [f for f in flags if f not in out and f not in hidden] == []
    assert "$PIPELINE_WIKI_DUMP" in out and "--no-trust-remote-code" in out


@pytest.mark.slow
def test_embed_inspect_sql_verify(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 300)
    out = tmp_path / "cache"
    cli("embed", "--corpus", str(corpus), "--out", str(out), "--teacher", str(tiny_bert), *TINY)
    summary = cli("inspect", str(out)).stdout
    assert "complete" in summary and "300" in summary and "mean" in summary
    got = cli(
        "sql",
        str(out),
        "SELECT count(*) AS n, avg(n_tokens) AS t FROM sentences",
        "--format",
        "csv",
    ).stdout.splitlines()
    assert got[0] == '"n","t"' and got[1].startswith("300,")
    rows = cli(
        "sql", str(out), "SELECT id, text FROM sentences ORDER BY id LIMIT 2", "--format", "json"
    ).stdout.splitlines()
    assert [json.loads(r)["id"] for r in rows] == [0, 1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "sql",
            str(out),
            "SELECT id FROM sentences",
            "--format",
            "parquet",
        ],
        capture_output=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        check=True,
    )
    (tmp_path / "q.parquet").write_bytes(proc.stdout)
    assert pq.read_table(tmp_path / "q.parquet").num_rows == 300
    assert "ok (2 shards, 300 rows" in cli("verify", str(out)).stdout
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for f in out.iterdir():
        (unfinished / f.name).write_bytes(f.read_bytes())
    m = json.loads((unfinished / "manifest.json").read_text())
    m["status"] = "in_progress"
    (unfinished / "manifest.json").write_text(json.dumps(m))
    said = cli("verify", str(unfinished)).stdout
    assert "incomplete (in progress)" in said and "ok (" not in said.split(";")[0]
    assert "SQL failed" in error_line(cli("sql", str(out), "SELEC nonsense", check=False))
    # Corrupt one byte in the middle of a shard: verify names it and fails.
    shard = out / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = cli("verify", str(out), check=False)
    assert proc.returncode == 1 and "shard-00001.arrow" in proc.stderr
    # Any reader, SQL included, names the corrupt shard instead of returning flipped bits.
    assert "shard-00001.arrow" in error_line(cli("sql", str(out), "SELECT 1", check=False))


def test_a_run_with_nothing_to_do_reports_no_speed(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli.stage_one import EmbedCommand, run_embed
    from pipeline.embedding import EmbedConfig

    corpus = write_corpus(tmp_path / "c.txt", 100)
    cfg = EmbedConfig(
        corpus=str(corpus), out=tmp_path / "o", teacher=str(tiny_bert), progress=False
    )
    run_embed(EmbedCommand(embed=cfg))
    assert "100 rows embedded in this run at" in capsys.readouterr().err
    run_embed(EmbedCommand(embed=cfg))
    said = capsys.readouterr().err
    assert "nothing to do" in said and "sent/s" not in said, said
    assert "100 rows in 1 shards, status complete" in said


@pytest.mark.slow
def test_bad_input_is_one_line(tmp_path: Path, tiny_bert: Path) -> None:
    t = ["--teacher", str(tiny_bert), *TINY]
    line = error_line(
        cli(
            "embed",
            "--corpus",
            str(tmp_path / "no.txt"),
            "--out",
            str(tmp_path / "o"),
            *t,
            check=False,
        )
    )
    assert "no.txt" in line
    line = error_line(
        cli(
            "embed",
            "--corpus",
            "wiki",
            "--out",
            str(tmp_path / "o"),
            *t,
            check=False,
            env={"HF_DATASETS_OFFLINE": "1", "PIPELINE_WIKI_DUMP": ""},
        )
    )
    assert "--wiki-dump" in line
    corpus = write_corpus(tmp_path / "c.txt", 20)
    line = error_line(
        cli(
            "embed",
            "--corpus",
            str(corpus),
            "--out",
            str(tmp_path / "o"),
            "--teacher",
            "nobody/none",
            check=False,
        )
    )
    assert "cannot load teacher" in line
    assert not (tmp_path / "o").exists()
    (tmp_path / "f").write_text("x")
    assert "is a file" in error_line(cli("inspect", str(tmp_path / "f"), check=False))
    assert "no manifest.json" in error_line(cli("inspect", str(tmp_path), check=False))


def children(pid: int) -> set[int]:
    """Every descendant of `pid`, from /proc (psutil is not a dependency)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = {int(c) for c in (task / "children").read_text().split()}
        except (OSError, ValueError):
            continue
        for kid in kids:
            found |= {kid} | children(kid)
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a dead child nobody reaped yet is not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_sigkill_leaves_no_process_and_resume_gives_the_uninterrupted_cache(
    tmp_path: Path, tiny_bert: Path
) -> None:
    # Windows of 256 sentences pickle to more than a pipe holds (64 kB): the reader blocks
    # in a pipe write, where the reader of a killed run used to hang forever.
    corpus = write_corpus(tmp_path / "c.txt", 3000)
    args = [
        "--corpus",
        str(corpus),
        "--teacher",
        str(tiny_bert),
        "--window",
        "256",
        "--shard-rows",
        "256",
        "--no-progress",
    ]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "embed", "--out", str(out), *args],
        env=os.environ | ENV,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(json.loads((out / "manifest.json").read_text())["shards"]) >= 2:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.01)
    # Frozen, the run keeps its lock, and its reader fills the queue and blocks in a write.
    proc.send_signal(signal.SIGSTOP)
    kids = children(proc.pid)
    assert kids, "the corpus reader should be a child process"
    # A second run into the same folder meanwhile is refused and says who holds it.
    line = error_line(cli("embed", "--out", str(out), *args, check=False))
    assert f"being written by another run (pid {proc.pid} " in line
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(running(k) for k in kids):
        time.sleep(0.05)
    assert not [k for k in kids if running(k)], "a process of the killed run survived it"
    # Whatever moment the kill hit, the manifest is valid and lists only whole shards.
    partial = open_cache(out, require_complete=False, checksums=True)
    for shard in partial.shards:
        partial.read_shard(shard)
    resumed = cli("embed", "--out", str(out), *args)
    assert "taking over the lock of a run that is gone" in resumed.stderr
    from pipeline.embedding import EmbedConfig, embed

    embed(
        EmbedConfig(
            corpus=str(corpus),
            out=tmp_path / "ref",
            teacher=str(tiny_bert),
            window=256,
            shard_rows=256,
            progress=False,
        )
    )
    assert_same_cache(out, tmp_path / "ref")


@pytest.mark.slow
def test_disk_full_then_resume(tmp_path: Path, tiny_bert: Path) -> None:
    # Short sentences, then long ones: the first shards fit the "disk", a later one does not.
    lines = write_corpus(tmp_path / "c.txt", 600).read_text().splitlines()
    short = [" ".join(line.split()[:5]) + f" {i}." for i, line in enumerate(lines[:300])]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(short + lines[300:]) + "\n")
    args = ["--corpus", str(corpus), "--teacher", str(tiny_bert), *TINY, "--shard-rows", "64"]
    out = tmp_path / "full"

    def small_disk() -> None:  # files may not grow past 25 kB: a shard write fails (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (25_000, 25_000))

    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "embed", "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=os.environ | ENV,
        preexec_fn=small_disk,
    )
    assert "disk full" in error_line(proc)
    partial = open_cache(out, require_complete=False, checksums=True)
    assert partial.manifest.status == "in_progress" and partial.shards  # whole shards kept
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial shard
    cli("embed", "--out", str(out), *args)
    from pipeline.embedding import EmbedConfig, embed

    embed(
        EmbedConfig(
            corpus=str(corpus),
            out=tmp_path / "ref",
            teacher=str(tiny_bert),
            window=64,
            shard_rows=64,
            progress=False,
        )
    )
    assert_same_cache(out, tmp_path / "ref")


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_and_repair(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 700)
    args = ["--corpus", str(corpus), "--teacher", str(tiny_bert), *TINY]

    def free_port() -> str:  # a fixed port clashes with any other run of this suite
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return str(s.getsockname()[1])

    def torchrun() -> None:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc-per-node",
                "2",
                "--master-port",
                free_port(),
                "-m",
                "pipeline",
                "embed",
                "--out",
                str(tmp_path / "two"),
                *args,
            ],
            env=os.environ | ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    torchrun()
    cli("embed", "--out", str(tmp_path / "one"), *args)
    two, one = open_cache(tmp_path / "two"), open_cache(tmp_path / "one")
    assert {s.rank for s in two.shards} == {0, 1} and two.manifest.world_size == 2
    assert not list((tmp_path / "two").glob("manifest.rank*"))
    # Each rank read the whole corpus: the cache's counts are the corpus's, not twice them.
    assert two.manifest.totals["corpus"] == one.manifest.totals["corpus"]
    q = "SELECT id, text, source, input_ids, mean FROM sentences ORDER BY id"
    a = two.connect().sql(q).to_arrow_table()
    b = one.connect().sql(q).to_arrow_table()
    assert a.select(["id", "text", "source", "input_ids"]).equals(
        b.select(["id", "text", "source", "input_ids"])
    )
    import numpy as np

    va, vb = np.array(a["mean"].to_pylist()), np.array(b["mean"].to_pylist())
    cos = (va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
    assert cos.min() >= 0.99999
    assert "ok" in cli("verify", str(tmp_path / "two")).stdout
    # A missing shard of rank 1: the same torchrun command embeds it again, and only it.
    before = sorted(p.name for p in (tmp_path / "two").iterdir())
    (tmp_path / "two" / "shard-r01-00000.arrow").unlink()
    torchrun()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == before
    assert "ok" in cli("verify", str(tmp_path / "two")).stdout
    again = open_cache(tmp_path / "two").connect().sql(q).to_arrow_table()
    assert again.select(["id", "text", "input_ids"]).equals(a.select(["id", "text", "input_ids"]))
    lost = next(s.rows for s in two.shards if s.file == "shard-r01-00000.arrow")
    assert open_cache(tmp_path / "two").manifest.totals["rows_this_run"] == lost
