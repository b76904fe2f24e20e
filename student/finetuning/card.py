"""The model card (``README.md``) that `pipeline finetune` writes into the model folder, and
the speed it reports: measured at the end of fine-tuning by loading the folder as a user
would (``TaskModel.from_pretrained``) and timing ``predict`` on the dev texts."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from cache.tasks import TaskSpec

SPEED_EXAMPLES = 2000  # dev examples timed at most (a few seconds on a laptop CPU)


def measure_speed(folder: Path, first: list[str], second: list[str] | None) -> dict[str, Any]:
    """Load ``folder`` as a TaskModel and time ``predict`` on up to SPEED_EXAMPLES inputs."""
    import torch

    from student.task_model import TaskModel

    first = first[:SPEED_EXAMPLES]
    texts: list[Any] = first if second is None else list(zip(first, second, strict=False))
    model = TaskModel.from_pretrained(folder)
    model.predict(texts[:16])  # warm-up: first-call allocations are not the model's speed
    t0 = time.perf_counter()
    model.predict(texts)
    seconds = time.perf_counter() - t0
    return {
        "examples": len(texts),
        "seconds": round(seconds, 3),
        "examples_per_s": round(len(texts) / seconds, 1) if seconds > 0 else None,
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def model_card(
    out: Path,
    task: TaskSpec,
    info: dict[str, Any],
    metrics: dict[str, Any],
    speed: dict[str, Any] | None,
) -> str:
    """README.md of a task model folder: what it is, what it was trained from, how well and
    how fast it does, and how to use it. ``info`` is task_model.json's content."""
    trained = info.get("trained", {})
    columns = info.get("columns") or {}
    lines = [f"# {task.name}: a fine-tuned BiLSTM student ({_problem(task)})", ""]
    lines += _what(task, trained, info) + [""]
    lines += ["## Training data", ""] + _data(task, trained) + [""]
    lines += ["## Metrics", ""] + _metrics(task, metrics, trained) + [""]
    lines += ["## Speed", ""] + _speed(speed, info) + [""]
    if info.get("encoder") is not None:
        lines += ["## Use", ""] + _usage(out, task, columns) + [""]
    lines += ["## Files", "", *_files(info)]
    return "\n".join(lines) + "\n"


def _problem(task: TaskSpec) -> str:
    shape = "sentence pairs" if task.pair else "single texts"
    if task.is_regression:
        low, high = task.score_range or (0.0, 1.0)
        return f"regression of a score in [{low:g}, {high:g}] on {shape}"
    kind = "multi-label classification" if task.is_multilabel else "classification"
    return f"{kind} of {shape}, {task.num_labels} labels"


def _what(task: TaskSpec, trained: dict[str, Any], info: dict[str, Any]) -> list[str]:
    student = trained.get("student", "?")
    teacher = trained.get("teacher") or "an unrecorded teacher"
    if info.get("encoder") is None:
        return [
            f"A {info['head'].get('kind')} head on the frozen sentence vectors of {teacher} "
            "(`--student teacher`). It needs the teacher to compute its inputs, so it is a "
            "baseline, not a model `TaskModel` loads."
        ]
    origin = {
        "scratch": "a BiLSTM student from random initialisation (no distillation)",
    }.get(student, f"the BiLSTM student `{student}`, distilled from `{teacher}` (SRA)")
    lines = [
        f"Fine-tuned from {origin}, with a {info['head'].get('kind')} head"
        + (" on the frozen encoder" if trained.get("frozen") else "")
        + ". It runs without the teacher and without `transformers`: torch, tokenizers and "
        "safetensors only.",
        "",
    ]
    if task.labels is not None:
        shown = ", ".join(f"`{x}`" for x in task.labels[:30])
        more = f" and {len(task.labels) - 30} more" if len(task.labels) > 30 else ""
        lines.append(f"Labels (in output order): {shown}{more}.")
    else:
        lines.append(
            "Predicts a score on the training labels' scale (the head learns it mapped to "
            "[0, 1]; predictions are mapped back)."
        )
    if trained.get("distill_weight"):
        lines += [
            "",
            f"Task-specific distillation: the loss also matched the logits of `"
            f"{trained.get('logits_teacher') or 'a fine-tuned teacher'}` (weight "
            f"{trained['distill_weight']}).",
        ]
    return lines


def _data(task: TaskSpec, trained: dict[str, Any]) -> list[str]:
    sizes = trained.get("examples", {})
    lines = [
        "Examples: "
        + ", ".join(f"{n:,} {split}" for split, n in sizes.items())
        + f" (task cache `{trained.get('cache', '?')}`).",
    ]
    source = trained.get("source") or {}
    files = source.get("files")
    if task.is_glue:
        lines.append(f"GLUE task {task.name} ({task.folder}), {source.get('source', 'files')}.")
    elif files:
        lines += ["", "| split | file | bytes | sha256 |", "|---|---|---:|---|"]
        lines += [
            f"| {f.get('split')} | {f.get('file')} | {f.get('bytes', 0):,} | "
            f"`{str(f.get('sha256', ''))[:16]}…` |"
            for f in files
        ]
    elif source.get("dataset"):
        lines.append(f"Hugging Face dataset `{source['dataset']}` {source.get('config') or ''}.")
    return lines


def _metrics(task: TaskSpec, metrics: dict[str, Any], trained: dict[str, Any]) -> list[str]:
    split = metrics.get("split", "dev")
    lines = [
        f"On {split}, seed {metrics.get('seed', trained.get('seed', 0))}, the epoch of the best "
        f"{task.main_metric} ({metrics.get('epoch')} of {metrics.get('epochs_run')}; model "
        "selection on dev makes these slightly optimistic):",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    lines += [f"| {m} | {metrics[m]:.4f} |" for m in task.metrics if m in metrics]
    lines += [
        "",
        "One run. `pipeline evaluate --tasks ... --seeds 3` fine-tunes several seeds and "
        "reports mean ± std.",
    ]
    return lines


def _speed(speed: dict[str, Any] | None, info: dict[str, Any]) -> list[str]:
    if speed is None:
        return ["Not measured (this head needs the teacher's vectors)."]
    what = "pairs" if info["task"]["pair"] else "texts"
    return [
        f"`TaskModel.predict` on {speed['examples']:,} {what} of the dev set: "
        f"{speed['seconds']:.2f} s, **{speed['examples_per_s']:,} per second** "
        f"(torch, {speed['threads']} threads, {speed['cpu']}; measured by `pipeline finetune` "
        f"on {speed['date']})."
    ]


def _usage(out: Path, task: TaskSpec, columns: dict[str, Any]) -> list[str]:
    folder = os.fspath(out)
    example = '("A man is playing a guitar.", "A man plays.")' if task.pair else '"A new text."'
    text = columns.get("text") or "text"
    pair = columns.get("pair") or "text_pair"
    what = {
        "classification": "# label names",
        "multilabel": "# a tuple of label names per text",
        "regression": "# scores",
    }[task.problem]
    lines = [
        "```python",
        "from student import TaskModel",
        "",
        f"model = TaskModel.from_pretrained({folder!r})",
        f"model.predict([{example}])  {what}",
    ]
    if not task.is_regression:
        lines.append(f"model.predict_proba([{example}])  # [n, labels] probabilities")
    lines += [
        "```",
        "",
        "A file (CSV, TSV, JSONL or TXT; streamed, rows kept in order):",
        "",
        "```bash",
        f"pipeline predict --model {folder} --input new.csv --output predictions.csv",
        "```",
        "",
        f"It reads the text from column `{text}`"
        + (f" and the second text from `{pair}`" if task.pair else "")
        + " (`--text-column`"
        + (", `--pair-column`" if task.pair else "")
        + " to change) and adds "
        + (
            "`score`."
            if task.is_regression
            else "`prediction` and one probability column `p_LABEL` per label."
        ),
    ]
    return lines


def _files(info: dict[str, Any]) -> list[str]:
    lines = ["- `task_model.json`: the task (problem, labels, pair, score range), the head, "]
    lines[0] += "the columns read, where it came from"
    if info.get("encoder") is not None:
        lines.append("- `encoder/`: the fine-tuned student (`StudentEncoder`, tokenizer inside)")
    lines += [
        "- `head.safetensors`: the task head",
        "- `metrics.json`, `metrics.jsonl`: dev metrics (per epoch in the .jsonl)",
        "- `predictions-SPLIT.tsv`: predictions on the task's dev and test splits",
        "- `finetune.json`: the run (every option, its identity, status)",
    ]
    return lines
