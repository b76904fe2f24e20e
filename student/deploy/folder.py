"""The exported folder (``pipeline export --format onnx``): what it holds and how it is read.

::

    export.json      {"format": "sra-export", "format_version": 1, "kind": "encoder" | "task",
                      "runtime": "onnx", "int8": ..., "inputs": [...], "outputs": [...],
                      "task": {...} (task models), "check": {...} (the export-time check)}
    config.json      the student's config (as in a student folder): its shape and provenance
    tokenizer.json   the teacher's tokenizer, as in the student folder
    model.onnx       the graph (student.deploy.onnx_graph)
    task_model.json  task models: the fine-tuned run's own (student/task_folder.py), so
                     ``TaskModel.from_pretrained`` reads the task from an export as from a run

A reader accepts exactly the ``format_version`` it knows; anything else is refused in one line
naming the file, so an old package never misreads a newer export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.errors import SraError

EXPORT_FILE = "export.json"
MODEL_FILE = "model.onnx"
EXPORT_FORMAT = "sra-export"
EXPORT_VERSION = 1
KINDS = ("encoder", "task")
RUNTIMES = ("onnx",)


@dataclass(frozen=True)
class ExportInfo:
    """What ``export.json`` says (its raw dict stays in ``data``)."""

    kind: str
    runtime: str
    int8: bool
    task: dict[str, Any] | None
    data: dict[str, Any]


def is_export(folder: Path) -> bool:
    """Whether ``folder`` is an exported model (it has ``export.json``), cheaply."""
    return (Path(folder) / EXPORT_FILE).is_file()


def read_export(folder: Path) -> ExportInfo:
    """Read and check ``export.json``; every problem is one ``SraError`` line."""
    path = Path(folder) / EXPORT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SraError(f"{path} is missing: {folder} is not an exported model folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SraError(f"{path} is not readable JSON ({e}): export the model again") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise SraError(
            f'{path} is not an export description (no "format": "{EXPORT_FORMAT}"): pass a '
            "folder written by pipeline export"
        )
    version = data.get("format_version")
    if version != EXPORT_VERSION:
        raise SraError(
            f"{path} has format_version {version!r}, this code reads {EXPORT_VERSION}: export "
            "the model again with this version, or use the version of sra-distill that wrote it"
        )
    kind, runtime = data.get("kind"), data.get("runtime")
    if kind not in KINDS:
        raise SraError(f"{path}: kind {kind!r} is not one of {', '.join(KINDS)}; export again")
    if runtime not in RUNTIMES:
        raise SraError(
            f"{path}: runtime {runtime!r} is not one this code runs ({', '.join(RUNTIMES)})"
        )
    task = data.get("task")
    if kind == "task" and not isinstance(task, dict):
        raise SraError(f'{path}: a task export needs a "task" object; export it again')
    if not (Path(folder) / MODEL_FILE).is_file():
        raise SraError(f"{Path(folder) / MODEL_FILE} is missing: export the model again")
    return ExportInfo(kind, runtime, bool(data.get("int8")), task, data)


# Files that mark a folder as written by `pipeline export` (ONNX, or sentence-transformers):
# --overwrite replaces such a folder whole, and nothing else.
EXPORT_MARKERS = (EXPORT_FILE, "modules.json")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that would lose something: a file, or a non-empty folder that is not a
    previous export (or is one, without --overwrite). Called before any work is done."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SraError(f"--out {out} is a file; choose a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    ours = any((out / marker).is_file() for marker in EXPORT_MARKERS)
    if not ours:
        raise SraError(f"--out {out} is not empty and holds no export; choose another folder")
    if not overwrite:
        raise SraError(f"--out {out} already holds an export; pass --overwrite to replace it")


def staging(out: Path) -> Path:
    """A fresh hidden folder beside ``out`` to build the export in."""
    import uuid

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
    path.mkdir()
    return path


def publish(built: Path, out: Path) -> None:
    """Move a complete export into place: ``out`` is the old export or the new one, never a
    mix (an old one is moved aside first, then deleted)."""
    import os
    import shutil

    from cache.files import fsync_dir

    out = Path(out)
    old = None
    if out.exists():
        old = built.parent / f"{built.name}.old"
        os.replace(out, old)
    os.replace(built, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
