"""The run-folder toolkit every training command shares (`train`, `finetune`,
`teacher-finetune`): one rule for an existing ``--out`` and the config fingerprint
(``folder``), atomic checkpoints (``checkpoint``), one learning-rate schedule (``schedule``),
progress and ``metrics.jsonl`` (``progress``), and the shared options (``options``).

Only ``options`` and ``schedule`` are imported here: they are torch-free, and command-line
start-up reads them.
"""

from student.runs.options import OptimConfig, RunOptions
from student.runs.schedule import lr_at

__all__ = ["OptimConfig", "RunOptions", "lr_at"]
