"""Deploying a student: ONNX export, ONNX Runtime (fp32 / int8) backends, exported folders.

``student.deploy`` needs the optional ``deploy`` extra (onnx, onnxruntime) only when a graph is
built or run; importing it does not. The pieces:

- ``onnx_graph``: the student (and a fine-tuned task model) as an ONNX graph, from its weights;
- ``session``: ONNX Runtime sessions and int8 quantization;
- ``encoder``: ``load_encoder`` / ``OnnxStudentEncoder``, behind
  ``StudentEncoder.from_pretrained(path, backend=...)``;
- ``task``: ``OnnxTaskEngine``, a fine-tuned task model on ONNX Runtime, which
  ``student.TaskModel.from_pretrained(path, backend=...)`` runs for ``"onnx"`` /
  ``"onnx-int8"`` and for exported task folders (``onnx_task_engine``);
- ``export``: writing an exported folder and checking it against torch;
- ``folder``: what an exported folder holds and how it is read.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "BACKENDS": "student.deploy.encoder",
    "load_encoder": "student.deploy.encoder",
    "OnnxTaskEngine": "student.deploy.task",
    "onnx_task_engine": "student.deploy.task",
    "export_onnx": "student.deploy.export",
}


def __getattr__(name: str) -> Any:
    # Lazy: student/encoder.py imports student.deploy.folder, and student.deploy.encoder
    # imports student/encoder.py, so nothing heavy (or circular) may load with the package.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'student.deploy' has no attribute {name!r}")


__all__ = list(_LAZY)
