"""Stage-two commands: `pipeline train`, `pipeline report`, `pipeline eval-sts`.

Plain typer-annotated functions, registered on the main app below. Everything
heavy is imported inside the commands, and nothing here (or in `student/`) imports
`transformers`: stage two runs without the teacher.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from pipeline.cli import command


def train(
    cache: Path = typer.Option(..., help="Stage-one cache directory (pipeline embed --out)."),
    out: Path = typer.Option(..., help="Run folder: checkpoints, metrics, the final student."),
    pooling: str = typer.Option(
        "mean", help="Teacher vectors to approximate: a cache column, or a comma list of them."
    ),
    epochs: int | None = typer.Option(
        None, help="Passes over the cache (default: 1, or as many as --max-steps needs)."
    ),
    max_steps: int | None = typer.Option(None, help="Stop after this many optimiser steps."),
    batch_size: int = typer.Option(256, help="Most sentences per batch."),
    token_budget: int = typer.Option(8192, help="Most padded tokens per batch."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW)."),
    seed: int = typer.Option(0, help="Seed for init, dropout and batch order."),
    init_embeddings: str = typer.Option(
        "teacher", help="teacher (PCA of the teacher's token embeddings) | random."
    ),
    hidden_size: int = typer.Option(300, help="LSTM hidden size per direction."),
    embedding_dim: int = typer.Option(300, help="Student token-embedding size."),
    layers: int = typer.Option(1, help="Stacked BiLSTM layers."),
    student_pooling: str = typer.Option("max", help="max | mean | max+mean over LSTM states."),
    dropout: float = typer.Option(0.1, help="Dropout on token embeddings (and between layers)."),
    projection_hidden: int = typer.Option(
        0, help="0: linear projection to the teacher's space; N: an MLP with N hidden units."
    ),
    val_fraction: float = typer.Option(0.01, help="Rows held out for validation (by id hash)."),
    val_max_rows: int = typer.Option(2000, help="Validate on at most this many held-out rows."),
    cos_weight: float = typer.Option(0.0, help="Loss = MSE + W * (1 - cosine to the teacher)."),
    normalize_targets: bool = typer.Option(
        False, help="Train on unit-length teacher vectors (cosine geometry only)."
    ),
    lm_weight: float = typer.Option(
        0.0, help="Add W * a bidirectional language-model loss (sampled softmax; --layers 1)."
    ),
    lm_samples: int = typer.Option(256, help="Negatives per batch for the --lm-weight loss."),
    rf_weight: float = typer.Option(
        0.0, help="Add W * a real-vs-corrupted sentence loss (one edited copy per sentence)."
    ),
    rf_level: str = typer.Option(
        "sentence", help="--rf-weight on: sentence (one head, pooled) | token (replaced words)."
    ),
    warmup: float = typer.Option(0.03, help="Share of the steps spent warming up linearly."),
    decay: str = typer.Option("cosine", help="cosine | linear | constant, down to lr/10."),
    weight_decay: float = typer.Option(0.01, help="AdamW weight decay on matrices."),
    grad_clip: float = typer.Option(1.0, help="Clip the gradient norm to this."),
    bf16: bool | None = typer.Option(
        None, "--bf16/--no-bf16", help="bf16 autocast (default: where the hardware has bf16)."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    workers: int = typer.Option(0, help="DataLoader worker processes per rank (0: in-process)."),
    shuffle_buffer: int = typer.Option(100_000, help="Rows shuffled and length-sorted together."),
    eval_every: int = typer.Option(500, help="Validate every N steps (and at the end)."),
    checkpoint_every: int = typer.Option(500, help="Checkpoint every N steps (0: never)."),
    log_every: int = typer.Option(10, help="Write a metrics line every N steps."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its checkpoint."),
    overwrite: bool = typer.Option(False, help="Replace a different run in --out."),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Train the BiLSTM student on a cache's token ids and teacher vectors (no teacher loaded)."""
    from student.train import TrainConfig
    from student.train import train as run_train

    cfg = TrainConfig(
        cache=cache,
        out=out,
        pooling=pooling,
        hidden_size=hidden_size,
        embedding_dim=embedding_dim,
        layers=layers,
        student_pooling=student_pooling,
        dropout=dropout,
        projection_hidden=projection_hidden,
        init_embeddings=init_embeddings,
        batch_size=batch_size,
        token_budget=token_budget,
        shuffle_buffer=shuffle_buffer,
        val_fraction=val_fraction,
        val_max_rows=val_max_rows,
        workers=workers,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        warmup=warmup,
        decay=decay,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        cos_weight=cos_weight,
        normalize_targets=normalize_targets,
        lm_weight=lm_weight,
        lm_samples=lm_samples,
        rf_weight=rf_weight,
        rf_level=rf_level,
        bf16=bf16,
        seed=seed,
        device=device,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )
    run_train(cfg)


def report(run: Path = typer.Argument(..., help="Run folder written by pipeline train.")) -> None:
    """Plot training loss and validation fidelity; write RUN/report.md."""
    from student.report import write_report

    path = write_report(run)
    print(path)


def eval_sts(
    student: Path = typer.Option(..., help="Student folder (a pipeline train run)."),
    data: Path = typer.Option(..., help="TSV with sentence1, sentence2, score columns (STS-B)."),
    teacher_cache: Path | None = typer.Option(
        None, help="Cache of the same sentences: also score the teacher, from its vectors."
    ),
    pooling: str | None = typer.Option(
        None, help="Teacher vectors in --teacher-cache (default: the student's teacher pooling)."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results here."),
    batch_size: int = typer.Option(256, help="Sentences per student batch."),
) -> None:
    """Spearman and Pearson of cosine similarity against gold scores (STS-B style)."""
    from rich.console import Console
    from rich.table import Table

    from student.sts import evaluate_sts

    result = evaluate_sts(
        student, data, teacher_cache=teacher_cache, pooling=pooling, batch_size=batch_size
    )
    table = Table(title=f"{data.name}: {result['pairs']:,} pairs")
    for name in ("model", "pairs", "spearman", "pearson"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in result["rows"]:
        table.add_row(
            row["model"], f"{row['pairs']:,}", f"{row['spearman']:.4f}", f"{row['pearson']:.4f}"
        )
    Console().print(table)
    for note in result.get("notes", []):
        print(note, file=sys.stderr)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")


COMMANDS: list[tuple[str, Callable[..., None], str]] = [
    ("train", train, "Example: pipeline train --cache caches/wiki-minilm --out runs/sra-minilm"),
    ("report", report, "Example: pipeline report runs/sra-minilm"),
    (
        "eval-sts",
        eval_sts,
        "Example: pipeline eval-sts --student runs/sra-minilm --data "
        "../shared/data/glue/STS-B/dev.tsv --teacher-cache caches/stsb-minilm",
    ),
]


for _name, _fn, _epilog in COMMANDS:
    command(_name, epilog=_epilog)(_fn)
