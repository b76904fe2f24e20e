"""The `pipeline` command: a thin typer layer; every command is a plain library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cache import CacheError
from pipeline.cli_tasks import register as register_tasks
from pipeline.cli_train import register as register_stage_two
from pipeline.errors import PipelineError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Distil a BERT teacher into a BiLSTM sentence encoder via a sentence-vector cache.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print JSON or tables.")
app.add_typer(bench_app, name="bench")


@app.command(
    epilog="Example: pipeline embed --corpus wiki --wiki-dump "
    "../shared/data/wiki/enwiki_2015_wikiextractor_AA-AB.txt.gz --limit 200000 "
    "--out caches/wiki-minilm"
)
def embed(
    corpus: str = typer.Option(
        ...,
        help="wiki | a file or folder (.txt/.jsonl/.parquet[.gz]) | hf:NAME[:CONFIG] | "
        "glue:TASK (sst2, cola, mrpc, stsb, qqp, mnli, qnli, rte, wnli)",
    ),
    out: Path = typer.Option(..., help="Cache directory to create or resume."),
    wiki_dump: str | None = typer.Option(
        None,
        help="Local WikiExtractor dump (plain or .gz) for --corpus wiki; "
        "default: $PIPELINE_WIKI_DUMP, else the hub's wikimedia/wikipedia.",
    ),
    glue_dir: str | None = typer.Option(
        None,
        help="Original GLUE folder (holding SST-2/, MRPC/, ...) for glue:TASK; "
        "default: $GLUE_DIR, else the hub's nyu-mll/glue.",
    ),
    split: str = typer.Option("train", help="Split of an hf: dataset."),
    text_field: str = typer.Option("text", help="Text field of .jsonl/.parquet/hf: data."),
    teacher: str | None = typer.Option(
        None,
        help="Hub name or local folder of a BERT-family encoder "
        "[default: sentence-transformers/all-MiniLM-L6-v2, packaged copy]",
    ),
    pooling: str = typer.Option(
        "mean", help="Comma list of mean, cls, pooler, mean_layerN (the mean of hidden layer N)."
    ),
    outputs: str | None = typer.Option(
        None,
        help="Comma list of what to cache: poolings (mean, cls, pooler, mean_layerN) and "
        "`logits` (glue: corpora, a teacher fine-tuned on the task); replaces --pooling.",
    ),
    augment: int = typer.Option(
        0, help="glue: corpora: augmented variants per training example (Tang et al. 2019)."
    ),
    augment_modes: str | None = typer.Option(
        None, help="Comma list of mask, replace, ngram (default: all that suit the task)."
    ),
    augment_seed: int = typer.Option(0, help="Seed of the augmentation."),
    max_length: int = typer.Option(128, help="Truncate sentences to this many tokens."),
    limit: int | None = typer.Option(None, help="Stop after N sentences."),
    dtype: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16 (auto: bf16 where fast)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    normalize: bool = typer.Option(False, help="Store unit-length vectors."),
    overwrite: bool = typer.Option(False, help="Replace a cache made with another config."),
    min_words: int = typer.Option(5, help="Drop sentences with fewer words."),
    max_words: int = typer.Option(128, help="Drop sentences with more words."),
    dedup: bool = typer.Option(True, help="Drop exact duplicate sentences."),
    window: int = typer.Option(4096, help="Sentences sorted by length together (resume unit)."),
    token_budget: int | None = typer.Option(None, help="Tokens per teacher batch [4096 CPU]."),
    shard_rows: int = typer.Option(50_000, help="Roll over to a new shard after N rows."),
    shard_mb: int = typer.Option(256, help="... or after this many MB."),
    trust_remote_code: bool = typer.Option(False, help="Allow code from the teacher's repo."),
    compile: bool = typer.Option(
        False, "--compile", help="torch.compile the teacher: ~30 s start-up, ~20% faster."
    ),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Stream a corpus through the teacher into a sharded, resumable Arrow cache."""
    from pipeline.augment import AugmentConfig
    from pipeline.embed import EmbedConfig
    from pipeline.embed import embed as run_embed
    from pipeline.sentences import FilterConfig

    wanted = [p.strip() for p in (outputs or pooling).split(",") if p.strip()]
    poolings = tuple(p for p in wanted if p != "logits") or ("mean",)
    modes = None
    if augment_modes is not None:
        modes = tuple(m.strip() for m in augment_modes.split(",") if m.strip())

    cfg = EmbedConfig(
        corpus=corpus,
        out=out,
        wiki_dump=wiki_dump,
        glue_dir=glue_dir,
        split=split,
        text_field=text_field,
        teacher=teacher,
        poolings=poolings,
        logits="logits" in wanted,
        augment=AugmentConfig(copies=augment, modes=modes, seed=augment_seed),
        max_length=max_length,
        limit=limit,
        dtype=dtype,
        device=device,
        normalize=normalize,
        overwrite=overwrite,
        window=window,
        token_budget=token_budget,
        shard_rows=shard_rows,
        shard_mb=shard_mb,
        filters=FilterConfig(min_words=min_words, max_words=max_words, dedup=dedup),
        progress=progress,
        trust_remote_code=trust_remote_code,
        compile=compile,
    )
    manifest = run_embed(cfg)
    t = manifest.totals
    corpus_stats = t.get("corpus", {})
    notes = [
        f"{corpus_stats[k]:,} {k.replace('_', ' ')}"
        for k in ("non_utf8_lines", "long_lines_truncated", "duplicates")
        if corpus_stats.get(k)
    ]
    print(
        f"{out}: {manifest.num_rows:,} rows in {len(manifest.shards)} shards, status "
        f"{manifest.status}; {t.get('sentences_per_second', 0):,.0f} sent/s this run"
        + (f" ({', '.join(notes)})" if notes else ""),
        file=sys.stderr,
    )


@app.command(epilog="Example: pipeline inspect caches/wiki-minilm")
def inspect(cache: Path = typer.Argument(..., help="Cache directory.")) -> None:
    """Summary of a cache: rows, shards, teacher, poolings, token lengths, status."""
    from pipeline.inspect import summarize

    table = Table(show_header=False, box=None)
    for key, value in summarize(cache).items():
        text = f"{value:,}" if type(value) is int else str(value)
        table.add_row(f"[bold]{key}", text)
    Console().print(table)


@app.command(
    epilog='Example: pipeline sql caches/wiki-minilm "SELECT count(*), avg(n_tokens) FROM '
    'sentences"'
)
def sql(
    cache: Path = typer.Argument(..., help="Cache directory."),
    query: str = typer.Argument(..., help="SQL over the views `sentences` and `shards`."),
    format: str = typer.Option("table", "--format", help="table | csv | json | parquet."),
) -> None:
    """Run a read-only DuckDB query over the cache."""
    from pipeline.inspect import run_sql

    table = run_sql(cache, query, format)
    if format == "table":
        out = Table()
        for name in table.column_names:
            out.add_column(name)
        # Column-wise, because a query may return two columns with the same name.
        for row in zip(*(col.to_pylist() for col in table.columns), strict=True):
            out.add_row(*(_cell(v) for v in row))
        Console().print(out)


@app.command(epilog="Example: pipeline verify caches/wiki-minilm")
def verify(cache: Path = typer.Argument(..., help="Cache directory.")) -> None:
    """Recompute every checksum and re-read every shard; exit 1 on any problem."""
    from cache import verify_cache

    report = verify_cache(cache)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.ok:
        for problem in report.problems:
            print(f"error: {problem}", file=sys.stderr)
        raise typer.Exit(1)
    print(f"{cache}: ok ({report.shards_checked} shards, {report.rows_checked:,} rows verified)")


@bench_app.command(
    "embed",
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
    from pipeline.bench import bench_embed as run

    print(json.dumps(run(wiki_dump, sentences, workdir, memory_sentences), indent=2))


@bench_app.command(
    "student",
    epilog="Example: pipeline bench student --student runs/sra-minilm-1m "
    "--json runs/sra-minilm-1m/bench-student.json",
)
def bench_student(
    student: Path = typer.Option(..., help="Student folder (or a run with it in encoder/)."),
    sentences: Path | None = typer.Option(
        None, help="One sentence per line (default: the unique sentences of STS-B dev)."
    ),
    limit: int | None = typer.Option(None, help="Use only the first N sentences."),
    batch_size: int = typer.Option(256, help="Student encode batch size."),
    latency_samples: int = typer.Option(200, help="Single-sentence calls for p50/p95 latency."),
    teacher: str | None = typer.Option(
        None, help="Teacher to compare with (default: the one the student records)."
    ),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the teacher."),
    bert_base: bool = typer.Option(
        True, help="Also time a random-weight BERT-base (<= 1,000 sentences)."
    ),
    bert_base_size: str = typer.Option(
        "768,12,12,3072", hidden=True, help="hidden,layers,heads,intermediate (tests)."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results here."),
) -> None:
    """Student vs teacher (and BERT-base): size, sentences/s, single-sentence latency."""
    from pipeline.bench_student import bench_student as run
    from pipeline.bench_student import render

    result = run(
        student,
        sentences,
        limit=limit,
        batch_size=batch_size,
        latency_samples=latency_samples,
        teacher=teacher,
        compile=compile,
        bert_base=bert_base,
        bert_base_size=[int(x) for x in bert_base_size.split(",")],
    )
    Console().print(render(result))
    _write_json(json_path, result)


@bench_app.command(
    "train",
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
    from pipeline.bench_train import bench_train as run
    from pipeline.bench_train import render

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
    _write_json(json_path, result)


def _write_json(path: Path | None, result: dict[str, object]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


# Stage two (train, report, eval-sts) lives in its own module: it never imports transformers.
register_stage_two(app)
register_tasks(app)


def _cell(value: object) -> str:
    if isinstance(value, list) and len(value) > 6:
        return (
            "["
            + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value[:4])
            + f", … ({len(value)})]"
        )
    return str(value)


def main() -> None:
    """Entry point: bad input ends as one `error:` line and exit status 1."""
    try:
        app()
    except (PipelineError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        sys.exit(1)
