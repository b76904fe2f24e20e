"""Stage-one commands: `pipeline embed`, `inspect`, `sql`, `verify`."""

from __future__ import annotations

import inspect as pyinspect
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cache.errors import SraError
from cache.options import nested
from pipeline.cli import app, command, one_line_errors
from pipeline.cli.options import config_command
from pipeline.embedding import EmbedConfig
from pipeline.tasks.corpus import TaskOptions

EMBED_EXAMPLE = (
    "Example: pipeline embed --corpus wiki --wiki-dump "
    "../shared/data/wiki/enwiki_2015_wikiextractor_AA-AB.txt.gz --limit 200000 "
    "--out caches/wiki-minilm"
)


@dataclass(frozen=True)
class EmbedCommand:
    """`pipeline embed`: EmbedConfig's options, plus TaskOptions' for glue:TASK corpora."""

    embed: EmbedConfig = nested(EmbedConfig)
    task: TaskOptions = nested(TaskOptions)


OUTPUTS = pyinspect.Parameter(
    "outputs",
    pyinspect.Parameter.KEYWORD_ONLY,
    annotation=str | None,
    default=typer.Option(
        None,
        "--outputs",
        help="Comma list of what to cache: poolings (mean, cls, pooler, mean_layerN) and "
        "`logits` (task corpora, a teacher fine-tuned on the task); replaces --pooling.",
    ),
)


def run_embed(command: EmbedCommand, outputs: str | None = None) -> None:
    from pipeline.tasks.corpus import embed_corpus

    cfg, options = command.embed, command.task
    if outputs is not None:
        # --outputs: poolings and `logits` in one list; replaces --pooling.
        wanted = [p.strip() for p in outputs.split(",") if p.strip()]
        poolings = tuple(p for p in wanted if p != "logits") or ("mean",)
        cfg = replace(cfg, poolings=poolings)
        options = replace(options, logits=options.logits or "logits" in wanted)
    before = _updated_at(cfg.out)
    manifest = embed_corpus(cfg, options)
    t = manifest.totals
    corpus_stats = t.get("corpus", {})
    notes = [
        f"{corpus_stats[k]:,} {k.replace('_', ' ')}"
        for k in ("non_utf8_lines", "long_lines_truncated", "duplicates", "empty_records")
        if corpus_stats.get(k)
    ]
    line = f"{cfg.out}: {manifest.num_rows:,} rows in {len(manifest.shards)} shards, status "
    line += manifest.status
    if manifest.updated_at != before and t.get("rows_this_run"):  # this run's speed is news
        line += f"; {t['rows_this_run']:,} rows embedded in this run"
        line += f" at {t.get('sentences_per_second', 0):,.0f} sent/s"
        line += f" ({', '.join(notes)})" if notes else ""
    print(line, file=sys.stderr)


def _updated_at(out: Path) -> str | None:
    from cache.manifest import MANIFEST_NAME, read_manifest

    try:
        return read_manifest(out / MANIFEST_NAME).updated_at
    except SraError:
        return None


app.command("embed", epilog=EMBED_EXAMPLE)(
    one_line_errors(
        config_command(
            EmbedCommand,
            run_embed,
            doc="Stream a corpus through the teacher into a sharded, resumable Arrow cache.",
            extra=(OUTPUTS,),
        )
    )
)


@command(epilog="Example: pipeline inspect caches/wiki-minilm")
def inspect(cache: Path = typer.Argument(..., help="Cache directory.")) -> None:
    """Summary of a cache: rows, shards, teacher, poolings, token lengths, status."""
    from pipeline.query import summarize

    table = Table(show_header=False, box=None)
    for key, value in summarize(cache).items():
        text = f"{value:,}" if type(value) is int else str(value)
        table.add_row(f"[bold]{key}", text)
    Console().print(table)


@command(
    epilog='Example: pipeline sql caches/wiki-minilm "SELECT count(*), avg(n_tokens) FROM '
    'sentences"'
)
def sql(
    cache: Path = typer.Argument(..., help="Cache directory."),
    query: str = typer.Argument(..., help="SQL over the views `sentences` and `shards`."),
    format: str = typer.Option("table", "--format", help="table | csv | json | parquet."),
) -> None:
    """Run a read-only DuckDB query over the cache."""
    from pipeline.query import run_sql

    table = run_sql(cache, query, format)
    if format == "table":
        out = Table()
        for name in table.column_names:
            out.add_column(name)
        # Column-wise, because a query may return two columns with the same name.
        for row in zip(*(col.to_pylist() for col in table.columns), strict=True):
            out.add_row(*(_cell(v) for v in row))
        Console().print(out)


@command(epilog="Example: pipeline verify caches/wiki-minilm")
def verify(cache: Path = typer.Argument(..., help="Cache directory.")) -> None:
    """Recompute every checksum and re-read every shard; exit 1 on any problem."""
    from cache import verify_cache
    from cache.reader import REPAIR_HINT

    report = verify_cache(cache)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.ok:
        for problem in report.problems:
            print(f"error: {problem}", file=sys.stderr)
        if any(REPAIR_HINT not in problem for problem in report.problems):
            print(
                f"to repair: {REPAIR_HINT} (only what is damaged is written again)", file=sys.stderr
            )
        raise typer.Exit(1)
    checked = f"{report.shards_checked} shards, {report.rows_checked:,} rows verified"
    if report.complete:
        print(f"{cache}: ok ({checked})")
    else:
        print(
            f"{cache}: incomplete (in progress); what is there is ok ({checked}); rerun the "
            "same `pipeline embed` command to finish it"
        )


def _cell(value: object) -> str:
    if isinstance(value, list) and len(value) > 6:
        return (
            "["
            + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value[:4])
            + f", … ({len(value)})]"
        )
    return str(value)
