"""The folder a fine-tuning run leaves, which is itself a task model: its files and its
description ``task_model.json``, written (``task_model_info``) and read
(``read_task_model_info``). Separate from ``student/task_model.py`` (loading and predicting)
because the writers (``student/finetuning/``, the export in ``student/deploy/``) need the
format but not the model, and reading it needs neither torch nor numpy.

The folder `pipeline finetune --out DIR` writes::

    task_model.json     what the model is: {"format": "sra-task-model", "format_version": 1,
                        "task": the task's definition (cache.tasks.TaskSpec.to_dict: problem,
                        labels in index order, pair, score range, metrics), "head": {kind,
                        hidden, pair, outputs}, "encoder": "encoder", "columns": the text, pair
                        and label columns it was trained from (own tasks; else null),
                        "trained": where it came from (student, teacher, cache, seed, metrics)}
    head.safetensors    the task head (``student.finetuning.head.TaskHead``)
    encoder/            the fine-tuned student (a ``StudentEncoder`` folder, tokenizer inside)
    README.md           the model card
    metrics.json, metrics.jsonl, predictions-SPLIT.tsv, finetune.json: the run's record
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cache.errors import SraError
from cache.tasks import TaskSpec, get_task, is_glue_name

TASK_MODEL_FILE = "task_model.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
CARD_FILE = "README.md"
FORMAT = "sra-task-model"
FORMAT_VERSION = 1
RUN_FILE = "finetune.json"  # the run's record, which a task model folder also is


def is_task_run(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is a fine-tuning run (it has ``finetune.json``), cheaply; an
    exported task model is not one (``student.deploy.folder.is_export``)."""
    return (Path(folder) / RUN_FILE).is_file()


def task_model_info(
    task: TaskSpec,
    head: dict[str, Any],
    *,
    encoder: bool,
    columns: dict[str, Any] | None,
    trained: dict[str, Any],
) -> dict[str, Any]:
    """``task_model.json``'s content (the module docstring)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task.to_dict(),
        "head": head,
        "encoder": ENCODER_DIR if encoder else None,
        "columns": columns,
        "trained": trained,
    }


def read_task_model_info(folder: Path) -> dict[str, Any]:
    """``task_model.json`` of ``folder``, checked; a folder that is not a task model (an
    encoder, an unfinished run, a model on the teacher's vectors) is one line saying what to
    do instead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SraError(
            f"task model {folder} does not exist or is not a folder: pass the folder "
            "`pipeline finetune --out` wrote"
        )
    path = folder / TASK_MODEL_FILE
    if not path.is_file():
        return _without_info(folder)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SraError(f"{path} is not readable JSON ({e}); fine-tune the model again") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise SraError(f'{path} is not a task model description (no "format": "{FORMAT}")')
    if info.get("format_version") != FORMAT_VERSION:
        raise SraError(
            f"{path} has format_version {info.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}: use the version of the student package that wrote it"
        )
    if info.get("encoder") is None:
        raise SraError(
            f"{folder} is a head on the teacher's frozen vectors (finetune --student teacher): "
            "it needs the teacher to compute them, which a TaskModel never loads; fine-tune a "
            "student for a model that runs alone"
        )
    return info


def _without_info(folder: Path) -> dict[str, Any]:
    """No task_model.json: say what the folder is, or read a finished GLUE run made before
    task models were written (its finetune.json describes the head)."""
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        raise SraError(
            f"{folder} is a student encoder, not a task model: load it with "
            f"StudentEncoder.from_pretrained({str(folder)!r}) (a task model is the folder "
            "`pipeline finetune --out` wrote)"
        )
    run_file = folder / RUN_FILE
    if not run_file.is_file():
        raise SraError(
            f"{folder} holds no {TASK_MODEL_FILE}: it is not a task model; pass the folder "
            "`pipeline finetune --out` wrote"
        )
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SraError(f"{run_file} is not readable JSON ({e})") from None
    if not isinstance(run, dict) or run.get("status") not in (None, "complete"):
        raise SraError(
            f"{folder} is an unfinished fine-tuning run: rerun the same `pipeline finetune` "
            "command to finish it"
        )
    head, name = run.get("head"), str(run.get("task", ""))
    if not isinstance(head, dict) or not is_glue_name(name):
        raise SraError(f"{folder} holds no {TASK_MODEL_FILE}: fine-tune it again to get one")
    if not (folder / ENCODER_DIR).is_dir():
        raise SraError(
            f"{folder} is a head on the teacher's frozen vectors (finetune --student teacher): "
            "it needs the teacher, which a TaskModel never loads"
        )
    task = get_task(name)
    keys = ("kind", "hidden", "pair", "outputs")
    return task_model_info(
        task, {k: head.get(k) for k in keys}, encoder=True, columns=None, trained={}
    )
