"""The teacher (or any BERT-family encoder) on ONNX Runtime, so the benchmark is fair to it.

`pipeline bench student --teacher-onnx` times the teacher where the student is fastest too:
exported by ``torch.onnx.export`` with dynamic batch and length axes, mean pooling inside the
graph (what stage one caches), run by ONNX Runtime with its default graph optimizations
(attention, LayerNorm and GELU fusions), and once more with int8 weights from ONNX Runtime's
dynamic quantization (``student.deploy.session.quantize_int8``, as the student's).
Batches are cut exactly as for the torch teacher (length-sorted, within the token budget).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


class _MeanPooled(torch.nn.Module):
    """The encoder's last hidden layer, mean-pooled over real tokens (stage one's "mean")."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def export_encoder(model: torch.nn.Module, vocab_size: int) -> bytes:
    """A BERT-family model (fp32) as ONNX bytes: ``input_ids``, ``attention_mask`` -> ``mean``.

    The TorchScript-based exporter is tried first: seconds where the dynamo exporter takes a
    minute or more on these models, and the same answers (max |diff| ~1e-6 on MiniLM, measured
    both ways). It is deprecated, so its warnings are silenced here, and where it is gone or
    fails the dynamo exporter takes over.
    """
    # A copy: the teacher's own Linear weights may be bf16, and stay so for its torch rows.
    wrapper = _MeanPooled(copy.deepcopy(model).float().eval())
    ids = torch.randint(0, vocab_size, (2, 8))
    mask = torch.ones_like(ids)
    with tempfile.TemporaryDirectory(prefix="sra-teacher-onnx-") as scratch:
        path = Path(scratch) / "teacher.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _legacy_export(wrapper, ids, mask, path)
        except Exception:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
            torch.onnx.export(
                wrapper,
                (ids, mask),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["mean"],
                dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
                opset_version=17,
                dynamo=True,
            )
        return _inline(path)


def _legacy_export(
    wrapper: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, path: Path
) -> None:
    torch.onnx.export(
        wrapper,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["mean"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "mean": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )


def _inline(path: Path) -> bytes:
    """The model as one byte string, external weight files folded in."""
    import onnx

    return onnx.load(str(path), load_external_data=True).SerializeToString()


def onnx_encoder(
    teacher: Any, model: bytes, budget: int, threads: int
) -> Callable[[list[str]], np.ndarray]:
    """Text in, mean vectors out, as ``pipeline.bench.baselines.teacher_encoder`` but on ONNX
    Runtime: the teacher's tokenizer and pad id, the same token-budget batches."""
    from pipeline.teacher import budget_batches
    from student.deploy.session import open_session

    session = open_session(model, threads, "cpu")

    def encode(texts: list[str]) -> np.ndarray:
        ids = [e.ids for e in teacher.backend.encode_batch(texts)]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out = np.empty((len(ids), teacher.hidden_size), dtype=np.float32)
        for idx in budget_batches(lengths, budget):
            width = int(lengths[idx].max())
            batch = np.full((len(idx), width), teacher.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, k in enumerate(idx):
                batch[row, : lengths[k]] = ids[k]
                mask[row, : lengths[k]] = 1
            out[idx] = session.run(["mean"], {"input_ids": batch, "attention_mask": mask})[0]
        return out

    return encode
