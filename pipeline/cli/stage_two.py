"""Stage-two commands: `pipeline train`, `pipeline report`, `pipeline eval-sts`.

Each is derived from its config (``config_command``): the options are the config's fields,
defined once with their defaults and help. Everything heavy is imported when a command runs,
and nothing here (or in `student/`) imports `transformers`: stage two runs without the teacher.
"""

from __future__ import annotations

import math
import sys

from pipeline.cli import app, one_line_errors, write_json
from pipeline.cli.options import config_command
from student.sts import StsConfig
from student.training.config import TrainConfig
from student.training.report import ReportConfig


def run_train(cfg: TrainConfig) -> None:
    from student.training.loop import train

    train(cfg)


def run_report(cfg: ReportConfig) -> None:
    from student.training.report import write_report

    print(write_report(cfg.run))


def run_eval_sts(cfg: StsConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    from student.sts import evaluate_sts

    result = evaluate_sts(
        cfg.student,
        cfg.data,
        teacher_cache=cfg.teacher_cache,
        pooling=cfg.pooling,
        batch_size=cfg.batch_size,
    )
    table = Table(title=f"{cfg.data.name}: {result['pairs']:,} pairs")
    for name in ("model", "pairs", "spearman", "pearson"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in result["rows"]:
        table.add_row(
            row["model"], f"{row['pairs']:,}", _correlation(row["spearman"]),
            _correlation(row["pearson"]),
        )  # fmt: skip
    Console().print(table)
    for note in result.get("notes", []):
        print(note, file=sys.stderr)
    write_json(cfg.json_path, result)


def _correlation(value: float) -> str:
    # A side whose cosines are all equal has no correlation to speak of.
    return f"{value:.4f}" if math.isfinite(value) else "undefined"


COMMANDS = [
    (
        "train",
        TrainConfig,
        run_train,
        "Train the BiLSTM student on a cache's token ids and teacher vectors (no teacher loaded).",
        "Example: pipeline train --cache caches/wiki-minilm --out runs/sra-minilm",
    ),
    (
        "report",
        ReportConfig,
        run_report,
        "Plot training loss and validation fidelity; write RUN/report.md.",
        "Example: pipeline report runs/sra-minilm",
    ),
    (
        "eval-sts",
        StsConfig,
        run_eval_sts,
        "Spearman and Pearson of cosine similarity against gold scores (STS-B style).",
        "Example: pipeline eval-sts --student runs/sra-minilm --data "
        "../shared/data/glue/STS-B/dev.tsv --teacher-cache caches/stsb-minilm",
    ),
]

for _name, _config, _run, _doc, _epilog in COMMANDS:
    app.command(_name, epilog=_epilog)(one_line_errors(config_command(_config, _run, doc=_doc)))
