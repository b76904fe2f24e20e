"""`pipeline predict`: a fine-tuned task model over a file, derived from ``PredictConfig``
(``pipeline.tasks.predict``); the work is ``predict_file``."""

from __future__ import annotations

from pipeline.cli import app, one_line_errors, write_json
from pipeline.cli.options import config_command
from pipeline.tasks.predict import PredictConfig


def run_predict(cfg: PredictConfig) -> None:
    from pipeline.tasks.predict import predict_file

    write_json(cfg.json_path, predict_file(cfg))


app.command(
    "predict",
    epilog="Example: pipeline predict --model runs/tickets --input new_tickets.csv "
    "--output predictions.csv",
)(
    one_line_errors(
        config_command(
            PredictConfig,
            run_predict,
            doc="Predict every row of a CSV/TSV/JSONL/TXT file with a fine-tuned task model "
            "(streamed; rows kept in order).",
        )
    )
)
