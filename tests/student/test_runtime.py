"""The one device resolver and the one bf16 policy."""

from __future__ import annotations

import pytest
import torch

from cache.errors import SraError
from student import runtime


def test_resolve_device():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_device("auto").type == want
    with pytest.raises(SraError, match="--device must be auto, cpu or cuda, got 'tpu'"):
        runtime.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SraError, match="no CUDA GPU is visible; use --device cpu"):
            runtime.resolve_device("cuda")


def test_bf16_as_asked_or_where_native(monkeypatch):
    cpu = torch.device("cpu")
    assert runtime.resolve_bf16(True, cpu) is True and runtime.resolve_bf16(False, cpu) is False
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: True)
    assert runtime.resolve_bf16(None, cpu) is True
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: False)
    assert runtime.resolve_bf16(None, cpu) is False


def test_native_bf16_needs_onednn_bf16():
    # Native bf16 implies oneDNN's bf16 kernels; the reverse does not hold (plain AVX-512).
    assert not runtime.cpu_bf16_supported() or runtime.onednn_bf16_available()


def test_every_command_uses_this_module():
    import pipeline.teacher
    import student.encoder
    import student.model

    assert pipeline.teacher.resolve_device is runtime.resolve_device
    assert pipeline.teacher.cpu_bf16_supported is runtime.cpu_bf16_supported
    assert student.encoder.cpu_bf16_supported is runtime.cpu_bf16_supported
    assert student.model.onednn_bf16_available is runtime.onednn_bf16_available
