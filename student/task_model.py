"""A fine-tuned task model, loaded and ready to predict: ``TaskModel``.

`pipeline finetune --out DIR` leaves a folder that is itself the model (local files only;
neither the teacher nor ``transformers`` is needed to load it or to predict); what it holds,
and how ``task_model.json`` is written and read, is in ``student/task_folder.py``.

Using it::

    from student import TaskModel
    m = TaskModel.from_pretrained("runs/tickets")
    m.predict(["my card was charged twice"])        # label names; tuples of them (multi-label);
                                                    # scores on the task's scale (regression)
    m.predict_proba(["my card was charged twice"])  # [n, labels]: softmax, or per-label sigmoid

A pair task takes ``(text, text_pair)`` tuples: ``m.predict([("A man plays.", "A man is
playing.")])``.

How outputs read, by problem: classification, the class with the highest logit (probabilities
softmax); multi-label, every label whose logit is above 0 (probabilities: one sigmoid per
label, so 0.5 is the threshold); regression, the head's output mapped from [0, 1] back to
the task's score range (``TaskSpec.from_unit``). Fine-tuning reads its dev predictions the same
way (``read_predictions``), so a loaded model predicts what the run reported.

Where it runs: an engine turns texts into the head's outputs (``logits(first, second,
batch_size)``): ``TorchEngine`` here, or ``student.deploy.task.OnnxTaskEngine`` on ONNX Runtime
(``backend="onnx"`` / ``"onnx-int8"``, and the folder `pipeline export --model RUN` writes, which
holds this ``task_model.json`` beside its ``model.onnx``). Everything else (the task, the checks
on inputs, how outputs read) is this module's, whichever engine runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import SraError
from cache.tasks import TaskSpec
from student.task_folder import HEAD_FILE, TASK_MODEL_FILE, read_task_model_info

# A pair is (text, text_pair); a batch is a list of texts or of pairs.
Pair = tuple[str, str]
Texts = str | Pair | Sequence[str] | Sequence[Pair]


# ------------------------------------------------------------------------ reading outputs


def read_predictions(task: TaskSpec, outputs: np.ndarray) -> np.ndarray:
    """A head's outputs ``[n, outputs]`` as predictions: ``[n]`` class indices, ``[n, labels]``
    int8 multi-hot rows (multi-label: logit > 0), or ``[n]`` scores on the task's scale."""
    outputs = np.asarray(outputs, dtype=np.float32).reshape(len(outputs), task.num_labels)
    if task.is_regression:
        return task.from_unit(outputs[:, 0])
    if task.is_multilabel:
        return (outputs > 0).astype(np.int8)
    return outputs.argmax(-1)


def read_probabilities(task: TaskSpec, outputs: np.ndarray) -> np.ndarray:
    """``[n, labels]`` probabilities: softmax over classes, a sigmoid per label (multi-label)."""
    if task.is_regression:
        raise SraError(
            f"{task.name} is a regression task: it predicts scores, not probabilities; use "
            "predict()"
        )
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), task.num_labels)
    if task.is_multilabel:
        probabilities = 1.0 / (1.0 + np.exp(-outputs))
    else:
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities.astype(np.float32)


def label_names(task: TaskSpec, predictions: np.ndarray) -> list[Any]:
    """Predictions as users read them: label names, tuples of them, or float scores."""
    if task.labels is None:
        return [float(x) for x in predictions]
    labels = task.labels
    if task.is_multilabel:
        return [tuple(labels[k] for k in np.flatnonzero(row)) for row in predictions]
    return [labels[int(k)] for k in predictions]


# ------------------------------------------------------------------------ the model


class TaskModel:
    """A fine-tuned student and its task head: ``predict`` and ``predict_proba`` on raw texts.

    Build one with ``TaskModel.from_pretrained(folder)``. Attributes: ``task`` (the
    ``TaskSpec``: ``problem``, ``labels``, ``pair``, ``score_range``, ``metrics``), ``columns``
    (the text/pair/label columns it was trained from, for reading files; None for GLUE),
    ``info`` (``task_model.json``), ``backend``.
    """

    def __init__(self, task: TaskSpec, engine: Any, info: dict[str, Any], backend: str) -> None:
        self.task = task
        self.engine = engine  # .logits(first, second, batch_size) -> [n, outputs] float32
        self.info = info
        self.backend = backend
        self.columns: dict[str, Any] | None = info.get("columns")

    @property
    def problem(self) -> str:
        return self.task.problem

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.task.labels

    @property
    def pair(self) -> bool:
        return self.task.pair

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], backend: str | None = None, *, device: str | None = None
    ) -> TaskModel:
        """Load the folder `pipeline finetune --out` wrote, or the folder `pipeline export
        --model RUN` wrote from it (local files only).

        ``backend``: for a fine-tuned run, None or ``"torch"`` runs the student in PyTorch;
        ``"onnx"`` / ``"onnx-int8"`` build its ONNX graph in memory (fp32, or int8 weights) and
        run it on ONNX Runtime (``student.deploy``; needs the ``deploy`` extra). An exported
        folder runs on ONNX Runtime as it was exported (None), or ``"onnx-int8"`` from an fp32
        export. ``device``: ``"cpu"`` or ``"cuda"`` (default: the CPU).
        Anything wrong with the folder is one ``SraError`` line saying what to do.
        """
        from student.deploy.encoder import check_backend
        from student.deploy.folder import is_export

        check_backend(backend)
        folder = Path(path)
        exported = is_export(folder)
        if exported:  # an encoder export, or one without its task definition: say so first
            from student.deploy.task import check_task_export

            check_task_export(folder)
        info = read_task_model_info(folder)
        try:
            task = TaskSpec.from_dict(info["task"])
        except (KeyError, ValueError) as e:
            raise SraError(f"{folder / TASK_MODEL_FILE} holds no valid task ({e})") from None
        if exported or backend not in (None, "torch"):
            from student.deploy.task import onnx_task_engine

            engine = onnx_task_engine(folder, info, task, backend, device=device)
            return cls(task, engine, info, engine.backend)
        return cls(task, TorchEngine.load(folder, info, task, device), info, "torch")

    # -- predicting ----------------------------------------------------------------------

    def logits(self, texts: Texts, batch_size: int = 256) -> np.ndarray:
        """The head's raw outputs, ``[n, outputs]`` float32 (``[outputs]`` for one input)."""
        single, first, second = self._sides(texts)
        outputs = self.outputs(first, second, batch_size)
        return outputs[0] if single else outputs

    def outputs(
        self, first: Sequence[str], second: Sequence[str] | None = None, batch_size: int = 256
    ) -> np.ndarray:
        """``logits`` for texts given as columns: the first texts and, for a pair task, the
        second ones (what `pipeline predict` calls on each chunk of a file)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SraError(f"batch_size must be a positive integer, got {batch_size!r}")
        if (second is None) == self.task.pair:
            raise SraError(
                f"{self.task.name} reads {'sentence pairs' if self.task.pair else 'single texts'}"
                f": pass {'both columns' if self.task.pair else 'one column'} of texts"
            )
        if second is not None and len(second) != len(first):
            raise SraError(f"{len(first)} first texts but {len(second)} second ones")
        first = list(first)
        if not first:
            return np.zeros((0, self.task.num_labels), np.float32)
        outputs = self.engine.logits(first, None if second is None else list(second), batch_size)
        return np.asarray(outputs, dtype=np.float32).reshape(len(first), self.task.num_labels)

    def predict(self, texts: Texts, batch_size: int = 256) -> Any:
        """Predictions for texts (or ``(text, text_pair)`` pairs): a list of label names
        (classification), of tuples of label names (multi-label), or a float32 array of
        scores on the task's scale (regression). One text (or pair) gives one prediction."""
        single, first, second = self._sides(texts)
        predictions = read_predictions(self.task, self.outputs(first, second, batch_size))
        if self.task.is_regression:
            scores = np.asarray(predictions, dtype=np.float32)
            return float(scores[0]) if single else scores
        names = label_names(self.task, predictions)
        return names[0] if single else names

    def predict_proba(self, texts: Texts, batch_size: int = 256) -> np.ndarray:
        """``[n, labels]`` float32 probabilities, columns in ``labels`` order (softmax over
        classes; one sigmoid per label for multi-label). Regression has none (``SraError``)."""
        single, first, second = self._sides(texts)
        if self.task.is_regression:
            read_probabilities(self.task, np.zeros((0, 1)))  # raises the one-line error
        probabilities = read_probabilities(self.task, self.outputs(first, second, batch_size))
        return probabilities[0] if single else probabilities

    def _sides(self, texts: Texts) -> tuple[bool, list[str], list[str] | None]:
        """(one input?, first texts, second texts or None), checked against the task's shape."""
        if self.task.pair:
            single = isinstance(texts, tuple) and len(texts) == 2 and isinstance(texts[0], str)
            items = [texts] if single else list(texts)  # type: ignore[arg-type]
            first, second = [], []
            for i, item in enumerate(items):
                if isinstance(item, str) or not isinstance(item, tuple | list) or len(item) != 2:
                    raise SraError(
                        f"{self.task.name} reads sentence pairs: pass (text, text_pair) tuples; "
                        f"input {i} is a {type(item).__name__}"
                    )
                first.append(_text(item[0], i))
                second.append(_text(item[1], i))
            return single, first, second
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)  # type: ignore[arg-type]
        return single, [_text(t, i, single_task=self.task.name) for i, t in enumerate(items)], None


def _text(value: Any, i: int, single_task: str | None = None) -> str:
    if isinstance(value, str):
        return value
    if single_task is not None and isinstance(value, tuple | list):
        raise SraError(f"{single_task} reads single texts, not pairs: input {i} is a pair")
    raise SraError(f"input {i} is a {type(value).__name__}, not a str")


class TorchEngine:
    """The fine-tuned student in PyTorch: each side encoded (``StudentEncoder.encode``:
    sorted by length, batched, in eval mode), then the head."""

    def __init__(self, encoder: Any, head: Any) -> None:
        self.encoder = encoder
        self.head = head.eval()

    @classmethod
    def load(
        cls, folder: Path, info: dict[str, Any], task: TaskSpec, device: str | None
    ) -> TorchEngine:
        import safetensors.torch

        from student.encoder import StudentEncoder
        from student.finetuning.head import TaskHead

        encoder = StudentEncoder.from_pretrained(folder / str(info["encoder"]))
        spec = info.get("head") or {}
        try:
            head = TaskHead(
                encoder.config.output_dim,
                bool(spec["pair"]),
                int(spec["outputs"]),
                str(spec["kind"]),
                int(spec.get("hidden") or 1),
                0.0,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SraError(f"{folder / TASK_MODEL_FILE}: the head is not described ({e})") from None
        if head.pair != task.pair or int(spec["outputs"]) != task.num_labels:
            raise SraError(f"{folder / TASK_MODEL_FILE}: the head does not fit the task")
        try:
            state = safetensors.torch.load_file(str(folder / HEAD_FILE), device="cpu")
            head.load_state_dict(state, strict=True)
        except Exception as e:  # missing, truncated, or another head's weights
            reason = " ".join(str(e).split())[:200]
            raise SraError(
                f"{folder / HEAD_FILE} is not this model's head ({reason}); fine-tune it again"
            ) from None
        if device is not None:
            import torch

            encoder.model.to(torch.device(device))
            head.to(torch.device(device))
        return cls(encoder, head)

    def logits(self, first: list[str], second: list[str] | None, batch_size: int) -> np.ndarray:
        import torch

        u = self.encoder.encode(first, batch_size=batch_size)
        v = None if second is None else self.encoder.encode(second, batch_size=batch_size)
        device = next(self.head.parameters()).device
        out = np.empty((len(first), self.head_outputs), np.float32)
        with torch.inference_mode():
            for start in range(0, len(first), 8192):  # the head in slices: bounded memory
                end = start + 8192
                a = torch.from_numpy(u[start:end]).to(device)
                b = None if v is None else torch.from_numpy(v[start:end]).to(device)
                out[start:end] = self.head(a, b).float().reshape(len(a), -1).cpu().numpy()
        return out

    @property
    def head_outputs(self) -> int:
        return int(list(self.head.parameters())[-1].shape[0])
