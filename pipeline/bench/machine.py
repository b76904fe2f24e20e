"""The machine a benchmark ran on, written beside every number it reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_native_bf16() -> bool:
    """Whether the student's encode and train use bf16 autocast on this CPU."""
    from student.runtime import cpu_bf16_supported

    return cpu_bf16_supported()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "native_bf16": cpu_native_bf16(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, "
        f"bf16 {'native' if m['native_bf16'] else 'no'}; {result['date']}"
    )
