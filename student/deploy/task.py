"""A fine-tuned task model on ONNX Runtime: the engine ``student.TaskModel`` runs for
``backend="onnx"`` / ``"onnx-int8"`` and for exported task folders.

``TaskModel`` (``student/task_model.py``) is the one task model users see: it reads the task
definition (``task_model.json``), checks the inputs and reads the outputs. An engine only turns
texts into the head's raw outputs, ``logits(first, second, batch_size) -> [n, outputs]``, like
``TorchEngine``. Here that is one ONNX graph (the encoder on each side, then the head), built
either:

- in memory from a ``pipeline finetune`` run folder's weights (``TorchEngine.load`` reads them,
  with its checks), quantized for ``"onnx-int8"``; or
- from an exported task folder (``pipeline export --model RUN``: ``model.onnx``,
  ``config.json``, ``tokenizer.json``, ``task_model.json``, ``export.json``), on the runtime it
  was exported for (an fp32 export also runs as ``"onnx-int8"``, quantized on load).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from cache.errors import SraError
from cache.tasks import TaskSpec
from student.config import StudentConfig
from student.deploy.folder import MODEL_FILE, ExportInfo, is_export, read_export
from student.deploy.onnx_graph import HeadWeights
from student.encoder import encoding_tokenizer, plan_batches


class OnnxTaskEngine:
    """The task graph on an ONNX Runtime session: pairs sorted by their longer side and cut
    into batches as ``StudentEncoder.encode`` cuts them, results in input order."""

    def __init__(
        self,
        config: StudentConfig,
        tokenizer: Tokenizer,
        model: bytes,
        outputs: int,
        *,
        int8: bool,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        from student.deploy.session import open_session

        self.config, self.tokenizer, self.outputs = config, tokenizer, outputs
        self._tokenizer = encoding_tokenizer(tokenizer, config.max_length)
        self.onnx_model = model
        self.backend = "onnx-int8" if int8 else "onnx"
        self.session = open_session(model, threads, device or "cpu")

    def logits(
        self, first: Sequence[str], second: Sequence[str] | None, batch_size: int
    ) -> np.ndarray:
        tokenizer, pad = self._tokenizer, self.config.pad_id
        sides = [first] if second is None else [first, second]
        ids = [[e.ids for e in tokenizer.encode_batch(list(side))] for side in sides]
        lengths = [np.array([len(x) for x in side], dtype=np.int64) for side in ids]
        out = np.empty((len(first), self.outputs), dtype=np.float32)
        if not len(first):
            return out
        longest = np.max(np.stack(lengths), axis=0)
        for batch in plan_batches(longest, batch_size):
            feeds: dict[str, np.ndarray] = {}
            for suffix, side, side_lengths in zip(("", "_b"), ids, lengths, strict=False):
                feeds[f"input_ids{suffix}"] = _pad([side[i] for i in batch], pad)
                feeds[f"lengths{suffix}"] = side_lengths[batch]
            out[batch] = self.session.run(["logits"], feeds)[0].reshape(len(batch), -1)
        return out


def _pad(rows: list[list[int]], pad: int) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    padded = np.full((len(rows), width), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    return padded


def head_weights(head: Any) -> HeadWeights:
    """A ``TaskHead`` as (weight, bias) arrays for the ONNX graph: its Linear layers in order
    (one: the linear head; two, tanh between: the MLP head; dropout is off at inference)."""
    import torch

    layers = [
        (m.weight.detach().float().cpu().numpy(), m.bias.detach().float().cpu().numpy())
        for m in head.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    return HeadWeights(layers, bool(head.pair))


def onnx_task_engine(
    folder: Path,
    info: dict[str, Any],
    task: TaskSpec,
    backend: str | None,
    *,
    device: str | None = None,
    threads: int | None = None,
) -> OnnxTaskEngine:
    """The engine for ``folder``: an exported task folder on its own runtime (``backend``
    None) or as asked, or a fine-tuned run built into the graph in memory (``backend``
    "onnx" / "onnx-int8"). ``info`` and ``task`` are the folder's ``task_model.json``, read.
    Refusals are one ``SraError`` line."""
    from student.deploy.encoder import check_backend
    from student.deploy.session import quantize_int8, require

    check_backend(backend)
    folder = Path(folder)
    require("onnxruntime")  # before any work: say what to install, in one line
    if is_export(folder):
        return _export_engine(folder, task, backend, device, threads)
    if backend in (None, "torch"):
        raise SraError(f"{folder} is not an exported model: load it with backend='torch'")

    from student.deploy.onnx_graph import serialize, task_graph
    from student.task_model import TorchEngine

    run = TorchEngine.load(folder, info, task, None)  # the weights, read and checked once
    model = serialize(task_graph(run.encoder.model, head_weights(run.head)))
    int8 = backend == "onnx-int8"
    if int8:
        model = quantize_int8(model)
    encoder = run.encoder
    return OnnxTaskEngine(
        encoder.config,
        encoder.tokenizer,
        model,
        task.num_labels,
        int8=int8,
        device=device,
        threads=threads,
    )


def check_task_export(folder: Path) -> ExportInfo:
    """``export.json`` of an exported task model, read; an exported encoder, or a task export
    without ``task_model.json`` (its task definition), is one line saying what to do."""
    from student.task_folder import TASK_MODEL_FILE

    export = read_export(folder)
    if export.kind != "task":
        raise SraError(
            f"{folder} holds an exported {export.kind}, not a task model: load it with "
            "StudentEncoder.from_pretrained"
        )
    if not (Path(folder) / TASK_MODEL_FILE).is_file():
        raise SraError(
            f"{folder} is an exported task model without {TASK_MODEL_FILE}: export the "
            "fine-tuned run again with this version"
        )
    return export


def _export_engine(
    folder: Path, task: TaskSpec, backend: str | None, device: str | None, threads: int | None
) -> OnnxTaskEngine:
    """An exported task folder: ``backend`` None runs it as exported; "torch" has no weights
    to run; "onnx" on int8 weights cannot undo the quantization; "onnx-int8" on an fp32
    export quantizes on load."""
    from student.deploy.session import quantize_int8
    from student.encoder import CONFIG_FILE, TOKENIZER_FILE, read_config, read_tokenizer

    export = check_task_export(folder)
    if backend == "torch":
        raise SraError(
            f"{folder} is an ONNX export with no torch weights: load the fine-tuned run it was "
            "exported from for backend='torch', or leave backend unset"
        )
    if backend == "onnx" and export.int8:
        raise SraError(
            f"{folder} holds int8 weights: use backend='onnx-int8' (or none), or export the run "
            "again without --int8 for fp32"
        )
    config = read_config(folder / CONFIG_FILE)
    tokenizer = read_tokenizer(folder / TOKENIZER_FILE, config)
    model, int8 = (folder / MODEL_FILE).read_bytes(), export.int8
    if backend == "onnx-int8" and not int8:
        model, int8 = quantize_int8(model), True
    return OnnxTaskEngine(
        config, tokenizer, model, task.num_labels, int8=int8, device=device, threads=threads
    )
