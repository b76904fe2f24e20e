"""Task commands: `pipeline finetune`, `pipeline evaluate`, `pipeline teacher-finetune` (GLUE
tasks and own tasks alike).

Each is derived from its config (``config_command``): ``student.finetuning.config``,
``pipeline.tasks.evaluate`` and ``pipeline.tasks.teacher_finetune`` define the options once.
"""

from __future__ import annotations

import json

from pipeline.cli import app, one_line_errors
from pipeline.cli.options import config_command
from pipeline.tasks.evaluate import EvaluateConfig
from pipeline.tasks.teacher_finetune import TeacherFinetuneConfig
from student.finetuning.config import FinetuneConfig


def run_finetune(cfg: FinetuneConfig) -> None:
    from student.finetuning.loop import finetune

    print(json.dumps(finetune(cfg), indent=2))


def run_evaluate(cfg: EvaluateConfig) -> None:
    from pipeline.tasks.evaluate import evaluate

    print(evaluate(cfg)["table"])


def run_teacher_finetune(cfg: TeacherFinetuneConfig) -> None:
    from pipeline.tasks.teacher_finetune import teacher_finetune

    print(json.dumps(teacher_finetune(cfg), indent=2))


COMMANDS = [
    (
        "finetune",
        FinetuneConfig,
        run_finetune,
        "Fine-tune a student on a task (GLUE or your own) from its task cache; the run "
        "folder is a model that TaskModel.from_pretrained loads.",
        "Example: pipeline finetune --student runs/sra-minilm "
        "--cache caches/sst2-minilm --out runs/sst2",
    ),
    (
        "evaluate",
        EvaluateConfig,
        run_evaluate,
        "Fine-tune every row x task x seed (reusing finished runs) and print the table.",
        "Example: pipeline evaluate --student runs/sra-minilm --tasks sst2,mrpc,rte,cola,"
        "stsb,task:data/tickets --seeds 3 --glue-dir ../shared/data/glue",
    ),
    (
        "teacher-finetune",
        TeacherFinetuneConfig,
        run_teacher_finetune,
        "Fine-tune the teacher on a task (GLUE or task:PATH): a model folder whose logits "
        "stage one can cache.",
        "Example: pipeline teacher-finetune --task sst2 --out teachers/sst2-minilm "
        "--glue-dir ../shared/data/glue",
    ),
]

for _name, _config, _run, _doc, _epilog in COMMANDS:
    app.command(_name, epilog=_epilog)(one_line_errors(config_command(_config, _run, doc=_doc)))
