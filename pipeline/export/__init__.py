"""`pipeline export`: a student or a fine-tuned run in the formats people serve.

It sits in `pipeline/`, not in `student/deploy/`, because its sentence-transformers format
builds sentence-transformers modules, which import `transformers`: `student/` never does.
The ONNX format is `student.deploy.export` (this package only dispatches to it).
"""

from pipeline.export.formats import ExportConfig, export, export_sentence_transformers

__all__ = ["ExportConfig", "export", "export_sentence_transformers"]
