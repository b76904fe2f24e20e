"""Fine-tuned task models on any backend: a ``pipeline finetune`` run folder in torch, the same
run on ONNX Runtime (in memory), or an exported task folder.

A fine-tuned run folder holds ``encoder/`` (the fine-tuned StudentEncoder),
``head.safetensors`` (the TaskHead) and ``finetune.json`` (whose ``head`` entry says the head's
kind, width, pair-ness, outputs and labels). Every task model here answers the same calls:

``logits(first, second=None)``   raw head outputs ``[n, outputs]`` (``second``: pair tasks)
``predict(first, second=None)``  labels (classification), or scores (regression, e.g. STS-B 0-5)

This is the deployment side only: the loadable ``TaskModel`` of the "any labelled data" work
is expected to dispatch here for ``backend="onnx"`` / ``"onnx-int8"`` and exported folders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from cache.errors import SraError
from student.config import StudentConfig
from student.deploy.folder import MODEL_FILE, is_export, read_export
from student.deploy.onnx_graph import HeadWeights
from student.encoder import StudentEncoder, encoding_tokenizer, plan_batches

RUN_FILE, HEAD_FILE, ENCODER_DIR = "finetune.json", "head.safetensors", "encoder"


@dataclass(frozen=True)
class TaskInfo:
    """What a task head computes and how its outputs read (``export.json``'s ``task``)."""

    name: str
    kind: str  # mlp | linear
    hidden: int
    pair: bool
    outputs: int
    labels: list[str] | None  # class names in output order; None for regression
    problem: str = "classification"  # classification | multilabel | regression
    # Regression: the task's score range; the head predicts in [0, 1] (TaskSpec.to_unit).
    score_range: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskInfo:
        try:
            return cls(**data)
        except TypeError as e:
            raise SraError(f"the task description is not one this code reads ({e})") from None

    def read(self, logits: np.ndarray) -> Any:
        """Predictions from logits: scores on the task's scale (regression), one label per
        example (classification), or the list of labels whose logit is positive (multilabel)."""
        if self.problem == "regression":
            low, high = self.score_range or (0.0, 1.0)
            return logits[:, 0] * (high - low) + low
        assert self.labels is not None
        if self.problem == "multilabel":
            return [[self.labels[i] for i in np.flatnonzero(row > 0)] for row in logits]
        return [self.labels[i] for i in logits.argmax(-1)]


class TaskModelBase:
    """What every task model answers: ``logits`` (each backend its own way), ``predict``
    (read from the logits through ``info``), and the one check of its inputs."""

    info: TaskInfo
    backend: str

    def logits(
        self, first: Sequence[str], second: Sequence[str] | None = None, batch_size: int = 256
    ) -> np.ndarray:
        raise NotImplementedError

    def predict(
        self, first: Sequence[str], second: Sequence[str] | None = None, batch_size: int = 256
    ) -> np.ndarray | list[str]:
        return self.info.read(self.logits(first, second, batch_size))

    def _check(self, first: Sequence[str], second: Sequence[str] | None) -> None:
        if self.info.pair and second is None:
            raise SraError(f"task {self.info.name} reads sentence pairs: pass the second sentences")
        if not self.info.pair and second is not None:
            raise SraError(f"task {self.info.name} reads single sentences, not pairs")
        if second is not None and len(second) != len(first):
            raise SraError(f"{len(first)} first sentences but {len(second)} second ones")


class TorchTaskModel(TaskModelBase):
    """A fine-tuned run in torch: the encoder's ``encode`` on each side, then the TaskHead."""

    backend = "torch"

    def __init__(self, encoder: StudentEncoder, head: Any, info: TaskInfo) -> None:
        self.encoder, self.head, self.info = encoder, head.eval(), info

    def logits(
        self, first: Sequence[str], second: Sequence[str] | None = None, batch_size: int = 256
    ) -> np.ndarray:
        import torch

        self._check(first, second)
        u = torch.from_numpy(self.encoder.encode(list(first), batch_size=batch_size))
        v = None
        if second is not None:
            v = torch.from_numpy(self.encoder.encode(list(second), batch_size=batch_size))
        with torch.inference_mode():
            out = self.head(u, v).float()
        return out.reshape(len(first), -1).numpy()


class OnnxTaskModel(TaskModelBase):
    """The task graph (encoder on each side, then the head) on an ONNX Runtime session;
    pairs sorted by their longer side and cut into batches as ``StudentEncoder.encode`` cuts
    them, results in input order."""

    def __init__(
        self,
        config: StudentConfig,
        tokenizer: Tokenizer,
        model: bytes,
        info: TaskInfo,
        *,
        int8: bool,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        from student.deploy.session import open_session

        self.config, self.tokenizer, self.info = config, tokenizer, info
        self._tokenizer = encoding_tokenizer(tokenizer, config.max_length)
        self.onnx_model = model
        self.backend = "onnx-int8" if int8 else "onnx"
        self.session = open_session(model, threads, device or "cpu")

    def logits(
        self, first: Sequence[str], second: Sequence[str] | None = None, batch_size: int = 256
    ) -> np.ndarray:
        self._check(first, second)
        tokenizer, pad = self._tokenizer, self.config.pad_id
        sides = [first] if second is None else [first, second]
        ids = [[e.ids for e in tokenizer.encode_batch(list(side))] for side in sides]
        lengths = [np.array([len(x) for x in side], dtype=np.int64) for side in ids]
        out = np.empty((len(first), self.info.outputs), dtype=np.float32)
        if not len(first):
            return out
        longest = np.max(np.stack(lengths), axis=0)
        for batch in plan_batches(longest, batch_size):
            feeds: dict[str, np.ndarray] = {}
            for suffix, side, side_lengths in zip(("", "_b"), ids, lengths, strict=False):
                feeds[f"input_ids{suffix}"] = _pad([side[i] for i in batch], pad)
                feeds[f"lengths{suffix}"] = side_lengths[batch]
            out[batch] = self.session.run(["logits"], feeds)[0]
        return out


def _pad(rows: list[list[int]], pad: int) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    padded = np.full((len(rows), width), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    return padded


# ------------------------------------------------------------------------- reading folders


@dataclass
class TaskRun:
    """A ``pipeline finetune`` run folder, read: its encoder, head weights and task."""

    folder: Path
    encoder: StudentEncoder
    head_state: dict[str, Any]
    info: TaskInfo

    def head_module(self) -> Any:
        from student.finetuning.head import TaskHead

        i = self.info
        head = TaskHead(self.encoder.config.output_dim, i.pair, i.outputs, i.kind, i.hidden, 0.0)
        head.load_state_dict(self.head_state, strict=True)
        return head.eval()

    def head_weights(self) -> HeadWeights:
        """The head as (weight, bias) pairs for the ONNX graph."""
        names = ["net"] if self.info.kind == "linear" else ["net.1", "net.4"]
        layers = [
            (
                self.head_state[f"{n}.weight"].float().numpy(),
                self.head_state[f"{n}.bias"].float().numpy(),
            )
            for n in names
        ]
        return HeadWeights(layers, self.info.pair)


def is_task_run(folder: Path) -> bool:
    return (Path(folder) / RUN_FILE).is_file()


def read_task_run(folder: Path) -> TaskRun:
    """Read a fine-tuned run folder; one ``SraError`` line for anything missing or foreign."""
    import safetensors.torch

    folder = Path(folder)
    try:
        run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SraError(f"{folder / RUN_FILE} is not readable ({e})") from None
    head = run.get("head") if isinstance(run, dict) else None
    if not isinstance(head, dict):
        raise SraError(
            f"{folder / RUN_FILE} has no head description: the fine-tuning run did not finish; "
            "finish it (pipeline finetune --resume) before exporting"
        )
    if not (folder / ENCODER_DIR).is_dir():
        raise SraError(
            f"{folder} has no {ENCODER_DIR}/ folder: a head over the teacher's vectors "
            "(--student teacher) has no student to deploy"
        )
    task = task_spec(run, folder)
    labels = head.get("labels")
    info = TaskInfo(
        name=task.name,
        kind=str(head.get("kind")),
        hidden=int(head.get("hidden", 0)),
        pair=bool(head.get("pair")),
        outputs=int(head.get("outputs", 0)),
        labels=list(labels) if labels is not None else None,
        problem=task.problem,
        score_range=list(task.score_range) if task.score_range is not None else None,
    )
    encoder = StudentEncoder.from_pretrained(folder / ENCODER_DIR)
    try:
        state = safetensors.torch.load_file(str(folder / HEAD_FILE), device="cpu")
    except Exception as e:
        raise SraError(f"{folder / HEAD_FILE} is not a readable safetensors file ({e})") from None
    return TaskRun(folder, encoder, state, info)


def task_spec(run: dict[str, Any], folder: Path) -> Any:
    """The run's task definition: a GLUE preset by name, else the one its task cache holds
    (an own task's definition lives there, ``cache/task_data.py``)."""
    from cache import open_cache
    from cache.task_data import read_task
    from cache.tasks import get_task, is_glue_name

    name = str(run.get("task", ""))
    if is_glue_name(name):
        return get_task(name)
    cache = (run.get("options") or {}).get("cache")
    try:
        return read_task(open_cache(cache, checksums=False)).task
    except Exception as e:
        raise SraError(
            f"{folder / RUN_FILE}: task {name!r} is not a GLUE task and its task cache "
            f"{cache!r} cannot be read for its definition ({' '.join(str(e).split())[:160]}); "
            "restore the cache the run was fine-tuned from"
        ) from None


def load_task_model(
    folder: Path,
    backend: str | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
) -> TaskModelBase:
    """A fine-tuned run folder (torch, or ``backend`` "onnx" / "onnx-int8" built in memory), or
    an exported task folder on its own runtime."""
    from student.deploy.encoder import check_backend
    from student.deploy.session import quantize_int8

    check_backend(backend)
    folder = Path(folder)
    if is_export(folder):
        info = read_export(folder)
        if info.kind != "task":
            raise SraError(f"{folder} holds an exported encoder: load it with StudentEncoder")
        if backend == "torch":
            raise SraError(f"{folder} is an ONNX export: load the run it came from for torch")
        if backend == "onnx" and info.int8:
            raise SraError(f"{folder} holds int8 weights: use backend='onnx-int8' or none")
        from student.encoder import CONFIG_FILE, TOKENIZER_FILE, read_config, read_tokenizer

        config = read_config(folder / CONFIG_FILE)
        tokenizer = read_tokenizer(folder / TOKENIZER_FILE, config)
        model, int8 = (folder / MODEL_FILE).read_bytes(), info.int8
        if backend == "onnx-int8" and not int8:
            model, int8 = quantize_int8(model), True
        task = TaskInfo.from_dict(info.task or {})
        return OnnxTaskModel(
            config, tokenizer, model, task, int8=int8, device=device, threads=threads
        )

    if not is_task_run(folder):
        raise SraError(
            f"{folder} is neither a fine-tuned run (no {RUN_FILE}) nor an exported task model "
            "(no export.json)"
        )
    run = read_task_run(folder)
    if backend in (None, "torch"):
        return TorchTaskModel(run.encoder, run.head_module(), run.info)
    from student.deploy.onnx_graph import serialize, task_graph

    model = serialize(task_graph(run.encoder.model, run.head_weights()))
    int8 = backend == "onnx-int8"
    if int8:
        model = quantize_int8(model)
    encoder = run.encoder
    return OnnxTaskModel(
        encoder.config,
        encoder.tokenizer,
        model,
        run.info,
        int8=int8,
        device=device,
        threads=threads,
    )
