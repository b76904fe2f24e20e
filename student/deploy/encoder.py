"""The student encoder on ONNX Runtime: same ``encode`` as ``StudentEncoder``, other engine.

``load_encoder(folder, backend)`` is what ``StudentEncoder.from_pretrained(folder, backend=...)``
calls for anything but plain torch:

- an exported folder (``pipeline export --format onnx [--int8]``) runs on ONNX Runtime, as
  exported (``backend`` None, or the export's own ``"onnx"`` / ``"onnx-int8"``);
- a student folder with ``backend="onnx"`` or ``"onnx-int8"`` is turned into the same graph in
  memory (and quantized for int8, ~1 s), so a user gets the faster engine without a file.

Backends (``BACKENDS``):

``torch``      the BiLSTMEncoder in PyTorch (fp32; bf16 autocast on CPUs with native bf16).
``onnx``       the same network as an ONNX graph on ONNX Runtime, fp32: equal to torch within
               float rounding (max |diff| ~1e-6), faster on CPU (docs/benchmarks.md).
``onnx-int8``  that graph with int8 weights (LSTM, projection, embedding table) from ONNX
               Runtime's dynamic quantization; cosine to fp32 >= 0.995 per sentence measured
               on STS-B dev (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from cache.errors import SraError
from student.config import StudentConfig
from student.deploy.folder import MODEL_FILE, is_export, read_export
from student.deploy.session import open_session, quantize_int8
from student.encoder import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    StudentEncoder,
    encoding_tokenizer,
    read_config,
    read_tokenizer,
)

BACKENDS = ("torch", "onnx", "onnx-int8")


def check_backend(backend: str | None) -> None:
    if backend is not None and backend not in BACKENDS:
        raise SraError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


class OnnxStudentEncoder(StudentEncoder):
    """A student encoder whose batches run on an ONNX Runtime session.

    Same ``config``, ``tokenizer`` and ``encode`` as ``StudentEncoder`` (tokenization, length
    sorting and batching are inherited); there is no torch ``model``. ``device`` "cuda" uses
    onnxruntime-gpu's CUDA provider where installed; the CPU otherwise. Threads follow
    ``torch.get_num_threads()`` at load time unless ``threads`` is given.
    """

    def __init__(
        self,
        config: StudentConfig,
        tokenizer: Tokenizer,
        model: bytes,
        *,
        int8: bool,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        # No StudentEncoder.__init__: it builds a torch model, which this class has none of.
        self._config = config
        self.tokenizer = tokenizer
        self._tokenizer = encoding_tokenizer(tokenizer, config.max_length)
        self.onnx_model = model
        self.backend = "onnx-int8" if int8 else "onnx"
        self.threads = threads
        self.device = device or "cpu"
        self.session = open_session(model, threads, self.device)

    @property
    def config(self) -> StudentConfig:
        return self._config

    @contextlib.contextmanager
    def _runner(
        self, device: str | None
    ) -> Iterator[Callable[[np.ndarray, np.ndarray], np.ndarray]]:
        if device is not None and device != self.device:
            self.session = open_session(self.onnx_model, self.threads, device)
            self.device = device
        session = self.session

        def run(padded: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            return session.run(["embeddings"], {"input_ids": padded, "lengths": lengths})[0]

        yield run

    def save_pretrained(self, path: object) -> None:
        raise SraError(
            f"an encoder on the {self.backend} backend has no torch weights to save: save the "
            "student folder it came from, or write this one with pipeline export --format onnx"
        )


def load_encoder(
    folder: Path,
    backend: str | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
) -> StudentEncoder:
    """A student folder or an exported encoder folder, on ``backend`` (see the module doc)."""
    check_backend(backend)
    folder = Path(folder)
    if not is_export(folder):
        student = StudentEncoder.from_pretrained(folder)
        if backend in (None, "torch"):
            return student
        from student.deploy.onnx_graph import encoder_graph, serialize

        model = serialize(encoder_graph(student.model))
        int8 = backend == "onnx-int8"
        if int8:
            model = quantize_int8(model)
        return OnnxStudentEncoder(
            student.config, student.tokenizer, model, int8=int8, device=device, threads=threads
        )

    info = read_export(folder)
    if info.kind != "encoder":
        raise SraError(
            f"{folder} holds an exported {info.kind} model, not an encoder: load it with "
            "student.TaskModel.from_pretrained"
        )
    model = (folder / MODEL_FILE).read_bytes()
    int8 = info.int8
    if backend == "torch":
        raise SraError(
            f"{folder} is an ONNX export with no torch weights: load the student folder it was "
            "exported from for backend='torch', or leave backend unset"
        )
    if backend == "onnx" and int8:
        raise SraError(
            f"{folder} holds int8 weights: use backend='onnx-int8' (or none), or export the "
            "student again without --int8 for fp32"
        )
    if backend == "onnx-int8" and not int8:
        model, int8 = quantize_int8(model), True
    config = read_config(folder / CONFIG_FILE)
    tokenizer = read_tokenizer(folder / TOKENIZER_FILE, config)
    return OnnxStudentEncoder(config, tokenizer, model, int8=int8, device=device, threads=threads)
