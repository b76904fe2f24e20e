"""`pipeline bench predict`: does `pipeline predict` stream, and what does reading and writing
files cost next to predicting in memory?

(a) Flat memory. Two CSV files of generated rows (``--small-rows``, default 10k, and
``--rows``, default 1M; an id and a text, or two texts for a pair model: words drawn from the
model's own vocabulary, 5 to 30 a text) go through ``python -m pipeline predict`` as
subprocesses; the peak resident memory of each (``ru_maxrss`` from wait4) is compared. A
streamed command holds one chunk of rows whatever the file's size, so the two peaks should be
about equal.

(b) Throughput. The rows/s `pipeline predict` reports for the large file (from its first row
read to its last written, so start-up is not counted) against ``TaskModel.predict`` on an
in-memory list of ``--memory-rows`` texts of the same kind, timed in this process before and
after the large run (a shared machine drifts; the mean of the two is the reference).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cache.errors import SraError
from pipeline.bench.machine import machine_info

MEMORY_TARGET_RATIO = 1.10  # peak at --rows within 10% of the peak at --small-rows
THROUGHPUT_TARGET_RATIO = 0.90  # pipeline predict within 10% of TaskModel.predict


def bench_predict(
    model: Path,
    *,
    rows: int = 1_000_000,
    small_rows: int = 10_000,
    memory_rows: int = 100_000,
    batch_size: int = 256,
    chunk_rows: int = 8192,
    workdir: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run (a) and (b) on the task model folder ``model``; JSON-ready results."""
    from student.task_model import TaskModel

    counts = {
        "--rows": rows,
        "--small-rows": small_rows,
        "--memory-rows": memory_rows,
        "--batch-size": batch_size,
        "--chunk-rows": chunk_rows,
    }
    for name, value in counts.items():
        if value < 1:
            raise SraError(f"{name} must be >= 1, got {value}")
    task_model = TaskModel.from_pretrained(model)
    words = vocabulary(Path(model) / str(task_model.info["encoder"]) / "tokenizer.json")
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)  # a scratch folder may be new
    scratch = Path(tempfile.mkdtemp(prefix="bench-predict-", dir=workdir))
    try:
        small = write_rows(scratch / "small.csv", small_rows, words, task_model.pair, seed)
        large = write_rows(scratch / "large.csv", rows, words, task_model.pair, seed + 1)
        texts = list(generate(memory_rows, words, task_model.pair, seed + 2))
        before = in_memory(task_model, texts, batch_size)
        runs = {
            "small": predict_run(model, small, scratch, small_rows, batch_size, chunk_rows),
            "large": predict_run(model, large, scratch, rows, batch_size, chunk_rows),
        }
        after = in_memory(task_model, texts, batch_size)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reference = (before["rows_per_s"] + after["rows_per_s"]) / 2
    memory_ratio = runs["large"]["ru_maxrss_mb"] / runs["small"]["ru_maxrss_mb"]
    throughput_ratio = runs["large"]["rows_per_s"] / reference
    return {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "model": str(model),
        "task": {
            "name": task_model.task.name,
            "problem": task_model.problem,
            "pair": task_model.pair,
        },
        "batch_size": batch_size,
        "chunk_rows": chunk_rows,
        "predict": runs,
        "in_memory": {"before": before, "after": after, "rows_per_s": round(reference, 1)},
        "memory_ratio": round(memory_ratio, 3),
        "throughput_ratio": round(throughput_ratio, 3),
        "targets": {
            "memory_flat": memory_ratio <= MEMORY_TARGET_RATIO,
            "throughput_within_10pct": throughput_ratio >= THROUGHPUT_TARGET_RATIO,
        },
    }


def vocabulary(tokenizer: Path) -> list[str]:
    """Whole words of the model's tokenizer (letters only, 3+ long): text it knows."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab(with_added_tokens=False)
    words = sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 3)
    return words or ["word", "text", "sentence"]


def generate(n: int, words: list[str], pair: bool, seed: int) -> Any:
    """n texts (or pairs) of 5 to 30 words, deterministic by seed."""
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choices(words, k=rng.randint(5, 30))).capitalize() + "."

    for _ in range(n):
        yield (text(), text()) if pair else text()


def write_rows(path: Path, n: int, words: list[str], pair: bool, seed: int) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "text", "text_pair"] if pair else ["id", "text"])
        for i, item in enumerate(generate(n, words, pair, seed)):
            writer.writerow([i, *item] if pair else [i, item])
    return path


def in_memory(model: Any, texts: list[Any], batch_size: int) -> dict[str, Any]:
    """TaskModel.predict on a list already in memory: the reference throughput."""
    model.predict(texts[:256], batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    model.predict(texts, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    return {
        "rows": len(texts),
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(texts) / seconds, 1),
    }


def predict_run(
    model: Path, source: Path, scratch: Path, rows: int, batch_size: int, chunk_rows: int
) -> dict[str, Any]:
    """`python -m pipeline predict` on ``source`` as a subprocess: its numbers and peak RSS."""
    out, stats = scratch / f"{source.stem}-out.csv", scratch / f"{source.stem}-stats.json"
    command = [sys.executable, "-m", "pipeline", "predict", "--model", str(model)]
    command += ["--input", str(source), "--output", str(out), "--no-progress"]
    command += [
        "--batch-size",
        str(batch_size),
        "--chunk-rows",
        str(chunk_rows),
        "--json",
        str(stats),
    ]
    with open(scratch / "stderr.txt", "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # its own rusage (Popen.wait would lose it)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = (scratch / "stderr.txt").read_text(errors="replace").strip()[-400:]
        raise SraError(f"pipeline predict failed in the benchmark (exit {code}): {tail}")
    result = json.loads(stats.read_text())
    if result["rows"] != rows:
        raise SraError(f"pipeline predict wrote {result['rows']} rows of {rows}")
    out.unlink()
    return {
        "rows": rows,
        "input_mb": round(source.stat().st_size / 2**20, 1),
        "seconds": result["seconds"],
        "rows_per_s": result["rows_per_s"],
        "wall_seconds": round(wall, 1),  # with start-up: imports, loading the model
        "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
    }


def render(result: dict[str, Any]) -> Any:
    from rich.table import Table

    m = result["machine"]
    table = Table(
        title=f"pipeline predict, {result['task']['name']} ({m['cpu']}, {m['threads']} threads, "
        f"{result['date']})"
    )
    for name in ("run", "rows", "rows/s", "wall s", "peak RSS MB"):
        table.add_column(name, justify="left" if name == "run" else "right")
    for name, run in result["predict"].items():
        table.add_row(
            f"pipeline predict ({name})",
            f"{run['rows']:,}",
            f"{run['rows_per_s']:,.0f}",
            f"{run['wall_seconds']:,.1f}",
            f"{run['ru_maxrss_mb']:,.0f}",
        )
    ref = result["in_memory"]
    table.add_row(
        "TaskModel.predict (in memory)",
        f"{ref['before']['rows']:,}",
        f"{ref['rows_per_s']:,.0f}",
        "",
        "",
    )
    table.caption = (
        f"peak memory {result['memory_ratio']:.2f}x the small run's (target <= "
        f"{MEMORY_TARGET_RATIO:.2f}); throughput {result['throughput_ratio']:.2f}x in-memory "
        f"(target >= {THROUGHPUT_TARGET_RATIO:.2f})"
    )
    return table
