"""``export_onnx``: a student folder or a fine-tuned run, as an exported ONNX folder, checked.

Read top to bottom: say what the source is, build its graph from the torch weights, quantize
it for ``int8``, run the graph and the torch model on a sample of sentences and compare, and
only when they agree write the folder (built aside and moved into place whole). A fine-tuned
run is read as ``TaskModel.from_pretrained`` reads it, and its ``task_model.json`` goes into the
export, so the export loads as a ``TaskModel`` too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import SraError
from cache.files import write_file
from student.deploy.folder import (
    EXPORT_FILE,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MODEL_FILE,
    check_out,
    is_export,
    publish,
    staging,
)
from student.encoder import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    StudentEncoder,
)
from student.task_folder import TASK_MODEL_FILE, is_task_run
from student.task_model import TaskModel, read_predictions

# The export-time check: fp32 must equal torch up to float rounding; int8 must keep every
# sample sentence's vector within the deployment bar (cosine 0.995, as STS-B dev is held to).
FP32_MAX_ABS_DIFF = 1e-3
FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.995
INT8_MIN_AGREEMENT = 0.9  # task models: share of sample predictions equal to torch's

# Sample for the check when none is given: short, long (past 128 tokens), empty, odd text.
SAMPLE_SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Stocks fell sharply on Monday after the central bank raised interest rates again.",
    "it 's a charming and often affecting journey .",
    "Is this the real life? Is this just fantasy?",
    "The cat sat on the mat.",
    "Das ist ein deutscher Satz, mit Umlauten: äöü ß.",
    "emoji 🙂 and symbols § ± ≠ in one line",
    "Paris is the capital and most populous city of France, with an estimated population of "
    "2,102,650 residents in January 2023 in an area of more than 105 km2.",
    " ".join(["long"] * 200),
    "no.",
    "The committee, which had met three times since March, declined to comment on the report.",
    "A woman slices a tomato.",
    "Two dogs run through a field of tall grass while a child watches from a fence.",
    "Why?",
]


def source_kind(source: Path) -> str:
    """``"encoder"`` for a student folder, ``"task"`` for a fine-tuned run; else one line."""
    source = Path(source)
    if not source.is_dir():
        raise SraError(f"--model {source} is not a folder: pass a student or fine-tuned run folder")
    if is_export(source):
        raise SraError(
            f"--model {source} is an export already: export from the student (or fine-tuned "
            "run) folder it came from"
        )
    if is_task_run(source):
        return "task"
    config = source / CONFIG_FILE
    if config.is_file() and (source / WEIGHTS_FILE).is_file():
        try:
            header = json.loads(config.read_text(encoding="utf-8")).get("format")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            header = None
        if header == FORMAT:
            return "encoder"
    raise SraError(
        f"--model {source} is neither a student folder (config.json with format {FORMAT!r} and "
        f"{WEIGHTS_FILE}) nor a fine-tuned run (finetune.json with encoder/): pass one of those"
    )


def export_onnx(
    source: Path,
    out: Path,
    *,
    int8: bool = False,
    sentences: list[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export ``source`` (student folder or fine-tuned run) to ``out``; returns what was
    written and the check (sentences, max |diff|, min cosine, prediction agreement)."""
    from student.deploy.onnx_graph import encoder_graph, serialize, task_graph
    from student.deploy.session import quantize_int8
    from student.deploy.task import head_weights

    source, out = Path(source), Path(out)
    kind = source_kind(source)
    check_out(out, overwrite)
    sample = list(sentences) if sentences else SAMPLE_SENTENCES

    task_model = None
    if kind == "encoder":
        student = StudentEncoder.from_pretrained(source)
        model = serialize(encoder_graph(student.model))
    else:
        # The run as TaskModel loads it (its checks refuse unfinished and teacher runs): the
        # reference for the check, and the task_model.json the export carries.
        task_model = TaskModel.from_pretrained(source)
        student = task_model.engine.encoder
        model = serialize(task_graph(student.model, head_weights(task_model.engine.head)))
    if int8:
        model = quantize_int8(model)

    if task_model is None:
        check = _check_encoder(student, model, int8, sample)
    else:
        check = _check_task(task_model, model, int8, sample)
    if not check["passed"]:
        raise SraError(
            f"the exported model does not match the torch model on {check['sentences']} sample "
            f"sentences ({_describe(check)}); nothing was written"
        )

    pair = task_model is not None and task_model.task.pair
    description = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "kind": kind,
        "runtime": "onnx",
        "int8": int8,
        "opset": _opset(),
        "inputs": ["input_ids", "lengths"] + (["input_ids_b", "lengths_b"] if pair else []),
        "outputs": ["logits" if kind == "task" else "embeddings"],
        "source": str(source.resolve()),
        "task": task_model.info["task"] if task_model is not None else None,
        "check": check,
    }
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **student.config.to_dict()}
    built = staging(out)
    try:
        write_file(built / MODEL_FILE, model)
        write_file(built / TOKENIZER_FILE, student.tokenizer.to_str(pretty=True).encode("utf-8"))
        write_file(built / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode("utf-8"))
        if task_model is not None:  # the task definition: TaskModel reads the export like a run
            text = json.dumps(task_model.info, indent=2) + "\n"
            write_file(built / TASK_MODEL_FILE, text.encode("utf-8"))
        write_file(built / EXPORT_FILE, (json.dumps(description, indent=2) + "\n").encode("utf-8"))
        publish(built, out)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return {
        "out": str(out),
        "kind": kind,
        "int8": int8,
        "mb": round(len(model) / 1e6, 2),
        "check": check,
    }


def describe_check(check: dict[str, Any]) -> str:
    """The check as one line for the command's output."""
    verdict = "ok" if check["passed"] else "FAILED"
    return f"check on {check['sentences']} sample sentences: {_describe(check)}: {verdict}"


def _describe(check: dict[str, Any]) -> str:
    parts = [f"max |diff| {check['max_abs_diff']:.2e}", f"min cosine {check['min_cosine']:.6f}"]
    if "agreement" in check:
        parts.append(f"predictions equal {check['agreement']:.1%}")
    return ", ".join(parts)


def _check_encoder(
    student: StudentEncoder, model: bytes, int8: bool, sample: list[str]
) -> dict[str, Any]:
    from student.deploy.encoder import OnnxStudentEncoder

    exported = _runnable(
        lambda: OnnxStudentEncoder(student.config, student.tokenizer, model, int8=int8), int8
    )
    expected = student.encode(sample)
    got = _runnable(lambda: exported.encode(sample), int8)
    return _compare(expected, got, int8)


def _check_task(
    task_model: TaskModel, model: bytes, int8: bool, sample: list[str]
) -> dict[str, Any]:
    """The run in torch (``TaskModel``) against the exported graph on the ONNX engine."""
    from student.deploy.task import OnnxTaskEngine

    task, student = task_model.task, task_model.engine.encoder
    exported = _runnable(
        lambda: OnnxTaskEngine(
            student.config, student.tokenizer, model, task.num_labels, int8=int8
        ),
        int8,
    )
    first, second = (sample, sample[1:] + sample[:1]) if task.pair else (sample, None)
    expected = task_model.outputs(first, second)
    got = _runnable(lambda: exported.logits(first, second, 256), int8)
    check = _compare(expected, got, int8)
    if task.is_regression:  # "agreement": within 2% of the score range of torch's
        same = np.abs(expected[:, 0] - got[:, 0]) <= 0.02
    else:  # the same label (classification), the same label set (multi-label)
        equal = read_predictions(task, expected) == read_predictions(task, got)
        same = equal.reshape(len(expected), -1).all(axis=1)
    check["agreement"] = float(np.mean(same))
    ok = check["agreement"] >= (INT8_MIN_AGREEMENT if int8 else 1.0)
    check["passed"] = bool(check["passed"] and ok)
    return check


def _compare(expected: np.ndarray, got: np.ndarray, int8: bool) -> dict[str, Any]:
    diff = float(np.abs(expected - got).max()) if expected.size else 0.0
    norms = np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
    cos = (expected * got).sum(axis=1) / np.maximum(norms, 1e-12)
    min_cos = float(cos.min()) if cos.size else 1.0
    if int8:
        passed = min_cos >= INT8_MIN_COSINE
    else:
        passed = diff <= FP32_MAX_ABS_DIFF and min_cos >= FP32_MIN_COSINE
    return {
        "sentences": len(expected),
        "max_abs_diff": diff,
        "min_cosine": min_cos,
        "passed": bool(passed),
    }


def _runnable(fn: Any, int8: bool) -> Any:
    """Run ``fn``; where int8 kernels are missing, refuse in one line (no silent fallback)."""
    try:
        return fn()
    except SraError as e:
        if int8:
            raise SraError(
                f"{e}; int8 kernels may be missing on this platform: export without --int8"
            ) from e
        raise
    except Exception as e:
        if not int8:
            raise
        reason = " ".join(str(e).split())[:200]
        raise SraError(
            f"onnxruntime could not run the int8 model on this platform ({reason}): "
            "export without --int8"
        ) from e


def _opset() -> int:
    from student.deploy.onnx_graph import OPSET

    return OPSET
