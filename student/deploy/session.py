"""ONNX Runtime, imported on demand: sessions, int8 quantization, and the one-line errors.

``onnxruntime`` and ``onnx`` are optional (the ``deploy`` extra); everything here imports them
inside functions, so ``import student`` never needs them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from cache.errors import SraError

INSTALL_HINT = 'pip install -e ".[deploy]" (onnx and onnxruntime)'


def require(module: str) -> Any:
    """Import ``onnx`` or ``onnxruntime``, or say in one line which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SraError(
            f"the ONNX backend needs {module}, which is not installed: {INSTALL_HINT}"
        ) from e


def providers(device: str | None) -> list[str]:
    """CUDA when asked for (or "auto") and this onnxruntime build has it; the CPU otherwise.

    The CPU provider is always last: ONNX Runtime runs any op CUDA lacks (the int8 LSTM among
    them) there, so nothing requires a GPU.
    """
    ort = require("onnxruntime")
    available = ort.get_available_providers()
    if device not in (None, "cpu") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device not in (None, "cpu", "auto"):
        raise SraError(
            f"device {device!r} is not available to onnxruntime here (it has "
            f"{', '.join(available)}): install onnxruntime-gpu for CUDA, or use device='cpu'"
        )
    return ["CPUExecutionProvider"]


def open_session(model: bytes | Path, threads: int | None = None, device: str | None = None) -> Any:
    """An inference session; ``threads`` None follows ``torch.get_num_threads()``, so one knob
    (``torch.set_num_threads``) sets the thread count of both backends."""
    ort = require("onnxruntime")
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no notes about initializers it pruned
    source = os.fspath(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, options, providers=providers(device))
    except SraError:
        raise
    except Exception as e:
        what = model if isinstance(model, Path) else "the model"
        raise SraError(
            f"onnxruntime could not load {what}: {' '.join(str(e).split())[:300]}"
        ) from e


def quantize_int8(model: bytes) -> bytes:
    """Dynamic int8 quantization with ONNX Runtime's own tool: LSTM, MatMul and the embedding
    table (Gather) get int8 weights; activations are quantized on the fly, per batch.

    ``reduce_range`` keeps weights to 7 bits: x86 CPUs without VNNI (AVX2, like the machine
    this was measured on) multiply u8 x s8 pairs into saturating int16 sums, which costs
    accuracy at 8 bits (docs/benchmarks.md). ``per_channel`` keeps one scale per output row.
    """
    require("onnx")
    require("onnxruntime")
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The tool logs advice meant for image models (pre-processing, calibration) at WARNING.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return _quantize(model, quantize_dynamic, QuantType)
    finally:
        root.setLevel(level)


def _quantize(model: bytes, quantize_dynamic: Any, QuantType: Any) -> bytes:  # noqa: N803
    with tempfile.TemporaryDirectory(prefix="sra-int8-") as scratch:
        source, target = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        source.write_bytes(model)
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["LSTM", "MatMul", "Gather"],
        )
        return target.read_bytes()
