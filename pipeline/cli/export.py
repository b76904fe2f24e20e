"""`pipeline export`: a student or a fine-tuned run as ONNX (fp32 / int8) or sentence-transformers.

Its options are ExportConfig's fields (pipeline/export/formats.py); the work is
`pipeline.export.export`.
"""

from __future__ import annotations

from pipeline.cli import app, one_line_errors
from pipeline.cli.options import config_command
from pipeline.export import ExportConfig

EXPORT_EXAMPLE = (
    "Example: pipeline export --model runs/sra-minilm-1m --format onnx --int8 "
    "--out exports/sra-minilm-int8"
)


def run_export(cfg: ExportConfig) -> None:
    from pipeline.export import export
    from student.deploy.export import describe_check

    result = export(cfg)
    what = "int8 ONNX" if result.get("int8") else result.get("format", "ONNX")
    size = f", {result['mb']} MB" if "mb" in result else ""
    print(f"{result['out']}: {result['kind']} as {what}{size}")
    print(describe_check(result["check"]))


app.command("export", epilog=EXPORT_EXAMPLE)(
    one_line_errors(
        config_command(
            ExportConfig,
            run_export,
            doc="Export a student or fine-tuned run: ONNX (fp32 or int8) or sentence-transformers.",
        )
    )
)
