"""Benchmark commands: `pipeline bench embed`, `bench student`, `bench train`, `bench predict`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from cache.errors import SraError
from pipeline.cli import bench_app, command, write_json


@command(
    "embed",
    on=bench_app,
    epilog="Example: pipeline bench embed --wiki-dump "
    "../shared/data/wiki/enwiki_2015_wikiextractor_AA-AB.txt.gz --sentences 12000",
)
def bench_embed(
    wiki_dump: str | None = typer.Option(None, help="WikiExtractor dump [$PIPELINE_WIKI_DUMP]."),
    sentences: int = typer.Option(12000, help="Sentences to embed (>= 4000)."),
    workdir: Path = typer.Option(Path("caches/bench"), help="Scratch folder for the caches."),
    memory_sentences: int = typer.Option(
        16000, help="Compare peak memory at this many and 4x as many sentences (0: skip)."
    ),
) -> None:
    """pipeline embed vs sentence-transformers on the same sentences, and FLOP/s vs peak."""
    from pipeline.bench.embed import bench_embed as run

    print(json.dumps(run(wiki_dump, sentences, workdir, memory_sentences), indent=2))


@command(
    "startup",
    on=bench_app,
    epilog="Example: pipeline bench startup --wiki-dump "
    "../shared/data/wiki/enwiki_2015_wikiextractor_AA-AB.txt.gz --sentences 8000",
)
def bench_startup(
    wiki_dump: str | None = typer.Option(None, help="WikiExtractor dump [$PIPELINE_WIKI_DUMP]."),
    sentences: int = typer.Option(8000, help="Sentences to embed."),
    workdir: Path = typer.Option(Path("caches/bench"), help="Scratch folder for the caches."),
    repeats: int = typer.Option(3, help="Runs of each, alternating; medians are reported."),
) -> None:
    """Whole-process pipeline embed vs sentence-transformers (start-up included), and where
    pipeline embed's start-up goes."""
    from pipeline.bench.embed import bench_startup as run

    print(json.dumps(run(wiki_dump, sentences, workdir, repeats), indent=2))


@command(
    "student",
    on=bench_app,
    epilog="Example: pipeline bench student --student "
    "runs/sra-minilm-1m:runs/evaluate/sst2/sra/seed0 --sentences stsb --sentences wiki "
    "--threads 1,2 --teacher-onnx --model2vec runs/m2v-minilm "
    "--json runs/bench/frontier.json --markdown runs/bench/frontier.md",
)
def bench_student(
    student: list[str] = typer.Option(
        ...,
        help="Student folder; FOLDER:RUN adds the dev metric of fine-tuned run RUN; repeatable.",
    ),
    sentences: list[str] | None = typer.Option(
        None, help="stsb | wiki | FILE (one sentence per line); repeatable [default: stsb]."
    ),
    limit: int | None = typer.Option(None, help="Use only the first N sentences of each set."),
    batch_size: int = typer.Option(256, help="Student encode batch size."),
    latency_samples: int = typer.Option(200, help="Single-sentence calls for p50/p95 latency."),
    threads: str | None = typer.Option(
        None, help="Comma list of thread counts, e.g. 1,2 [default: torch's current]."
    ),
    backend: str = typer.Option(
        "torch,onnx,onnx-int8", help="Comma list of student backends: torch, onnx, onnx-int8."
    ),
    teacher: str | None = typer.Option(
        None, help="Teacher to compare with (default: the one the first student records)."
    ),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the teacher."),
    teacher_onnx: bool = typer.Option(
        False, help="Also time the teacher and BERT-base on ONNX Runtime (fp32 and int8)."
    ),
    bert_base: bool = typer.Option(
        True, help="Also time a random-weight BERT-base (<= 1,000 sentences)."
    ),
    bert_base_size: str = typer.Option(
        "768,12,12,3072", hidden=True, help="hidden,layers,heads,intermediate (tests)."
    ),
    bert_base_sentences: int = typer.Option(
        1000, help="Time BERT-base on at most this many of each set's sentences."
    ),
    model2vec: Path | None = typer.Option(
        None, help="Model2Vec folder for a static baseline (distilled from the teacher if absent)."
    ),
    quality: bool = typer.Option(
        True, help="STS-B dev Spearman, cosine to fp32, fine-tuned dev metrics beside speed."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results here."),
    markdown_path: Path | None = typer.Option(
        None, "--markdown", help="Also write the tables as markdown here."
    ),
) -> None:
    """The deployment frontier: students on each backend vs the teacher, BERT-base and a
    static baseline; sentences/s, latency and quality in one table per sentence set."""
    from pipeline.bench.student import bench_student as run
    from pipeline.bench.student import markdown, render

    result = run(
        student,
        sentences,
        limit=limit,
        batch_size=batch_size,
        latency_samples=latency_samples,
        threads=_int_list(threads, "--threads") if threads else None,
        backends=[b.strip() for b in backend.split(",") if b.strip()],
        teacher=teacher,
        compile=compile,
        teacher_onnx=teacher_onnx,
        bert_base=bert_base,
        bert_base_size=_int_list(bert_base_size, "--bert-base-size"),
        bert_base_sentences=bert_base_sentences,
        model2vec=model2vec,
        quality=quality,
    )
    # Wide tables: a terminal gets its own width, a pipe or file the whole row.
    console = Console(width=None if sys.stdout.isatty() else 240)
    for table in render(result):
        console.print(table)
    write_json(json_path, result)
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(markdown(result))


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SraError(f"{option} takes a comma list of integers, got {text!r}") from None


@command(
    "train",
    on=bench_app,
    epilog="Example: pipeline bench train --cache caches/wiki-1m --json runs/bench-train.json",
)
def bench_train(
    cache: Path = typer.Option(..., help="Stage-one cache (>= 1M rows for the memory part)."),
    steps: int = typer.Option(200, help="Timed training steps a run (0: skip this part)."),
    warmup_steps: int = typer.Option(20, help="Untimed steps before each timed run."),
    repeats: int = typer.Option(2, help="Data path / preloaded pairs, run A B B A ..."),
    batch_size: int | None = typer.Option(None, help="Most sentences a batch (train's: 256)."),
    token_budget: int | None = typer.Option(None, help="Most padded tokens (train's: 8192)."),
    workers: int = typer.Option(0, help="DataLoader workers, as pipeline train --workers."),
    rows_small: int = typer.Option(100_000, help="Rows of the small cache for the memory part."),
    memory_steps: int = typer.Option(
        300, help="--max-steps of each pipeline train run for memory (0: skip that part)."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results here."),
) -> None:
    """Training speed fed from the cache vs preloaded batches; peak memory, small vs full cache."""
    from pipeline.bench.train import bench_train as run
    from pipeline.bench.train import render

    result = run(
        cache,
        steps=steps,
        warmup_steps=warmup_steps,
        repeats=repeats,
        batch_size=batch_size,
        token_budget=token_budget,
        workers=workers,
        rows_small=rows_small,
        memory_steps=memory_steps,
    )
    for table in render(result):
        Console().print(table)
    write_json(json_path, result)


@command(
    "predict",
    on=bench_app,
    epilog="Example: pipeline bench predict --model runs/mr --json runs/bench-predict.json",
)
def bench_predict(
    model: Path = typer.Option(..., help="Task model folder (pipeline finetune --out)."),
    rows: int = typer.Option(1_000_000, help="Rows of the large generated file."),
    small_rows: int = typer.Option(10_000, help="Rows of the small file (peak memory baseline)."),
    memory_rows: int = typer.Option(
        100_000, help="Texts for TaskModel.predict on an in-memory list (the reference)."
    ),
    batch_size: int = typer.Option(256, help="Texts per forward pass (both sides)."),
    chunk_rows: int = typer.Option(8192, help="pipeline predict --chunk-rows."),
    workdir: Path | None = typer.Option(None, help="Scratch folder for the files (default: tmp)."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results here."),
) -> None:
    """pipeline predict on 10k vs 1M generated rows: peak memory, and rows/s vs in-memory."""
    from pipeline.bench.predict import bench_predict as run
    from pipeline.bench.predict import render

    result = run(
        model,
        rows=rows,
        small_rows=small_rows,
        memory_rows=memory_rows,
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        workdir=workdir,
    )
    Console().print(render(result))
    write_json(json_path, result)
