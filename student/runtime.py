"""Where code runs: the one device resolver and the one bf16 policy, for every command.

bf16 pays off only where the hardware computes in it natively: a CUDA GPU that has it, or a
CPU with AVX512-BF16 or AMX (oneDNN's bf16 kernels). On a plain AVX-512 CPU oneDNN emulates
bf16 (no faster than fp32), and on AVX2 it has no bf16 kernels at all, so a bf16 LSTM fails
there ("could not create a primitive descriptor"). So: ``auto`` means bf16 on native hardware
only, and ``onednn_bf16_available`` tells the student where its LSTM must stay in fp32.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache.errors import SraError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto | cpu | cuda`` to a device; an unknown name or an absent GPU is one line."""
    import torch

    if device not in DEVICES:
        raise SraError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SraError("--device cuda but no CUDA GPU is visible; use --device cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


@functools.cache
def onednn_bf16_available() -> bool:
    """Whether oneDNN has bf16 kernels here (the LSTM among them): AVX-512 CPUs and newer,
    natively (avx512_bf16/AMX) or emulated; on AVX2 it has none and a bf16 LSTM fails."""
    import torch

    try:
        return torch.backends.mkldnn.is_available() and bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except Exception:
        return False


@functools.cache
def cpu_bf16_supported() -> bool:
    """True when this CPU runs bf16 matmuls natively (AVX512-BF16 / AMX on x86, ARM BF16)."""
    if not onednn_bf16_available():
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        # oneDNN also says yes on plain AVX-512, where bf16 is emulated and not faster.
        try:
            flags = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return True  # not Linux: trust oneDNN's own check
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return True


def resolve_bf16(bf16: bool | None, device: torch.device) -> bool:
    """``--bf16/--no-bf16`` as given, or (None) whether bf16 pays off on this device."""
    import torch

    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if bf16 and not supported:
            raise SraError("this GPU has no bf16; pass --no-bf16")
        return supported if bf16 is None else bf16
    return cpu_bf16_supported() if bf16 is None else bf16


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``bf16``, else nothing."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
