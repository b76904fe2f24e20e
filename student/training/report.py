"""`pipeline report RUN`: plots of a training run and a short Markdown summary, from files only.

Reads ``run.json`` and ``metrics.jsonl`` and writes ``loss.png`` (training loss and learning
rate over steps), ``fidelity.png`` (validation MSE and mean cosine to the teacher over steps)
and ``report.md`` into the run folder. Works on a finished run or one still training.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from cache.errors import SraError
from cache.options import option
from student.runs.progress import MetricsLog


@dataclass(frozen=True)
class ReportConfig:
    """What `pipeline report` takes."""

    run: Path = option(MISSING, "Run folder written by pipeline train.", argument=True)


def read_metrics(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training lines, validation lines) of ``metrics.jsonl``; unreadable lines are skipped
    (a killed run can leave half a line)."""
    log = MetricsLog(run)
    if not log.path.is_file():
        raise SraError(f"{log.path} is missing: point at a folder written by `pipeline train`")
    train, val = [], []
    for record in log.read():
        if "val_cos" in record:
            val.append(record)
        elif "loss" in record:
            train.append(record)
    return train, val


def write_report(run: str | Path) -> Path:
    """Write the plots and ``report.md`` into ``run``; returns the path of ``report.md``."""
    run = Path(run)
    run_file = run / "run.json"
    try:
        info = json.loads(run_file.read_text())
    except OSError:
        raise SraError(
            f"{run_file} is missing: point at a folder written by `pipeline train`"
        ) from None
    except ValueError as e:
        raise SraError(f"{run_file} is not valid JSON ({e})") from None
    train, val = read_metrics(run)
    if not train:
        raise SraError(f"{run / 'metrics.jsonl'} has no training lines yet; train first")

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in train]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in train], color="tab:blue", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (MSE to teacher vectors)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in train], color="tab:gray", alpha=0.6, label="lr")
    lr_ax.set_ylabel("learning rate")
    fig.legend(loc="upper right")
    ax.set_title("Training loss")
    fig.tight_layout()
    fig.savefig(run / "loss.png", dpi=120)
    plt.close(fig)

    images = ["loss.png"]
    if val:
        vsteps = [r["step"] for r in val]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(vsteps, [r["val_cos"] for r in val], "o-", color="tab:green", label="val cosine")
        ax.set_xlabel("step")
        ax.set_ylabel("mean cosine to teacher")
        ax.grid(alpha=0.3)
        mse_ax = ax.twinx()
        mse_ax.plot(vsteps, [r["val_mse"] for r in val], "s--", color="tab:red", label="val MSE")
        mse_ax.set_ylabel("MSE")
        fig.legend(loc="center right")
        ax.set_title("Validation fidelity to the teacher (held-out rows)")
        fig.tight_layout()
        fig.savefig(run / "fidelity.png", dpi=120)
        plt.close(fig)
        images.append("fidelity.png")

    path = run / "report.md"
    path.write_text(_markdown(run, info, train, val, images))
    return path


def _markdown(
    run: Path,
    info: dict[str, Any],
    train: list[dict[str, Any]],
    val: list[dict[str, Any]],
    images: list[str],
) -> str:
    config = info.get("config", {})
    student = config.get("student", {})
    optim = config.get("optim", {})
    data = config.get("data", {})
    summary = info.get("summary", {})
    last = train[-1]
    rates = [r["sentences_per_s"] for r in train if r.get("sentences_per_s")]
    rows = [
        ("status", info.get("status", "?")),
        ("teacher", f"{student.get('teacher', '?')} ({student.get('teacher_pooling', '?')})"),
        ("cache", f"{info.get('cache', '?')} (fingerprint {student.get('cache_fingerprint')})"),
        (
            "student",
            f"BiLSTM {student.get('num_layers')}x{student.get('hidden_size')}, "
            f"emb {student.get('embedding_dim')}, {student.get('pooling')} pooling, "
            f"out {student.get('output_dim')}",
        ),
        (
            "optimiser",
            f"AdamW lr {optim.get('lr')}, {optim.get('decay')} decay, batch <= "
            f"{data.get('batch_size')} rows / {data.get('token_budget')} tokens, "
            f"bf16 {config.get('bf16')}",
        ),
        ("steps", f"{last['step']:,} (epoch {last.get('epoch', 0) + 1})"),
        ("final training loss", f"{last['loss']:.5g}"),
    ]
    if rates:
        rates.sort()
        rows.append(("sentences/s (median)", f"{rates[len(rates) // 2]:,.0f}"))
    if val:
        best = max(val, key=lambda r: r["val_cos"])
        rows += [
            ("final val cosine", f"{val[-1]['val_cos']:.4f} ({val[-1].get('val_rows', '?')} rows)"),
            ("final val MSE", f"{val[-1]['val_mse']:.5g}"),
            ("best val cosine", f"{best['val_cos']:.4f} at step {best['step']:,}"),
        ]
    if summary.get("seconds_this_run"):
        rows.append(("wall time (last session)", f"{summary['seconds_this_run']:,.0f} s"))
    lines = [f"# Training report: {run.name}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines.append("")
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"
