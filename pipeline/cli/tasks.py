"""Task commands: `pipeline finetune` and `pipeline evaluate` (GLUE, from task caches).

Thin typer wrappers over `student.finetune.finetune` and `pipeline.tasks.evaluate.evaluate`;
registered on the main app by `command`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.cli import command


@command(
    epilog="Example: pipeline finetune --student runs/sra-minilm --task sst2 "
    "--cache caches/sst2-minilm --out runs/sst2"
)
def finetune(
    student: str = typer.Option(
        ..., help="Student folder (pipeline train --out) | scratch | teacher (frozen vectors)."
    ),
    task: str = typer.Option(
        ..., help="GLUE task: sst2, cola, mrpc, stsb, qqp, mnli, qnli, rte, wnli."
    ),
    cache: Path = typer.Option(..., help="Task cache (pipeline embed --corpus glue:TASK)."),
    out: Path = typer.Option(..., help="Run folder: metrics.json, predictions, the model."),
    epochs: int | None = typer.Option(
        None,
        help="Passes over the training split (default: 3, up to 10 on small tasks: ~600 steps).",
    ),
    batch_size: int = typer.Option(64, help="Examples per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, warmup then linear decay)."),
    encoder_lr: float | None = typer.Option(
        None, help="The encoder's peak learning rate, if lower than the head's (default: --lr)."
    ),
    seed: int = typer.Option(0, help="Seed for the head, dropout and batch order."),
    freeze_encoder: bool = typer.Option(
        False, "--freeze-encoder", help="Train the head only, on the student's fixed vectors."
    ),
    head: str | None = typer.Option(
        None, help="mlp | linear (default: linear when frozen, else mlp)."
    ),
    head_hidden: int = typer.Option(512, help="Hidden units of the MLP head."),
    dropout: float = typer.Option(0.1, help="Dropout in the MLP head."),
    encoder_dropout: float = typer.Option(
        0.1, help="Dropout in the encoder (token embeddings, between layers) while fine-tuning."
    ),
    sra_weight: float = typer.Option(
        0.0, help="Also keep approximating the cached teacher vectors: W * (1 - cosine)."
    ),
    distill_weight: float = typer.Option(
        0.0, help="Weight of the loss to the fine-tuned teacher's cached logits (Tang et al.)."
    ),
    distill_loss: str = typer.Option("mse", help="mse on logits | kl (with --temperature)."),
    temperature: float = typer.Option(1.0, help="Softening of --distill-loss kl."),
    label_weight: float = typer.Option(1.0, help="Weight of the gold-label loss."),
    augmented: bool = typer.Option(
        True, help="With --distill-weight: also train on the cache's augmented examples."
    ),
    pooling: str = typer.Option("mean", help="Teacher vectors of the cache to use."),
    select: str = typer.Option("best", help="best (dev early stopping) | last epoch."),
    patience: int = typer.Option(2, help="With --select best: epochs without a new best."),
    bf16: bool | None = typer.Option(
        None, help="bf16 autocast (default: where the hardware has it)."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different run in OUT."),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Fine-tune a student on a GLUE task from its task cache (no teacher loaded)."""
    from student.finetune import FinetuneConfig
    from student.finetune import finetune as run

    metrics = run(
        FinetuneConfig(
            student=student,
            task=task,
            cache=cache,
            out=out,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            encoder_lr=encoder_lr,
            freeze_encoder=freeze_encoder,
            head=head,
            head_hidden=head_hidden,
            dropout=dropout,
            encoder_dropout=encoder_dropout,
            sra_weight=sra_weight,
            distill_weight=distill_weight,
            distill_loss=distill_loss,
            temperature=temperature,
            label_weight=label_weight,
            augmented=augmented,
            pooling=pooling,
            select=select,
            patience=patience,
            seed=seed,
            bf16=bf16,
            device=device,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
        )
    )
    print(json.dumps(metrics, indent=2))


@command(
    epilog="Example: pipeline evaluate --student runs/sra-minilm --tasks sst2,mrpc,rte,cola,"
    "stsb --seeds 3 --glue-dir ../shared/data/glue"
)
def evaluate(
    student: str = typer.Option(..., help="The distilled student folder (pipeline train --out)."),
    tasks: str = typer.Option("sst2,mrpc,rte,cola,stsb", help="Comma list of GLUE tasks."),
    seeds: int = typer.Option(3, help="Seeds per task and row (mean ± std)."),
    rows: str = typer.Option(
        "sra,scratch,sra-frozen,teacher-frozen",
        help="Comparison rows: sra, scratch, sra-frozen, teacher-frozen, sra-coop, and the "
        "task-specific tang, sra-tsd, teacher-ft.",
    ),
    glue_dir: str | None = typer.Option(
        None, help="GLUE folder for task caches not built yet (default: $GLUE_DIR, else the hub)."
    ),
    caches: Path = typer.Option(Path("caches"), help="Where task caches are found or built."),
    out: Path = typer.Option(Path("runs/evaluate"), help="Runs, results.md and results.json."),
    epochs: int | None = typer.Option(None, help="Override finetune's epochs."),
    encoder_lr: float | None = typer.Option(
        None, help="finetune's --encoder-lr in the rows that fine-tune the distilled student."
    ),
    teachers: Path = typer.Option(
        Path("teachers"),
        help="Fine-tuned teachers (rows tang, sra-tsd, teacher-ft): found or made.",
    ),
    augment: int | None = typer.Option(
        None, help="Augmented variants per training example (default: ~12k per task, 1..20)."
    ),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Fine-tune every row x task x seed (reusing finished runs) and print the table."""
    from pipeline.tasks.evaluate import EvaluateConfig
    from pipeline.tasks.evaluate import evaluate as run

    summary = run(
        EvaluateConfig(
            student=student,
            tasks=[t.strip() for t in tasks.split(",") if t.strip()],
            seeds=seeds,
            rows=[r.strip() for r in rows.split(",") if r.strip()],
            glue_dir=glue_dir,
            caches=caches,
            out=out,
            epochs=epochs,
            encoder_lr=encoder_lr,
            teachers=teachers,
            augment=augment,
            progress=progress,
        )
    )
    print(summary["table"])


@command(
    "teacher-finetune",
    epilog="Example: pipeline teacher-finetune --task sst2 --out teachers/sst2-minilm "
    "--glue-dir ../shared/data/glue",
)
def teacher_finetune(
    task: str = typer.Option(..., help="GLUE task: sst2, cola, mrpc, stsb, qqp, mnli, qnli, rte."),
    out: Path = typer.Option(..., help="Model folder to write (save_pretrained, safetensors)."),
    teacher: str | None = typer.Option(
        None, help="HF BERT-family name or folder (default: the packaged all-MiniLM-L6-v2)."
    ),
    glue_dir: str | None = typer.Option(
        None, help="Original GLUE TSV folder (default: $GLUE_DIR, else the hub)."
    ),
    epochs: int | None = typer.Option(
        None, help="Passes over train (default: 1 above 20k examples, else 3)."
    ),
    batch_size: int = typer.Option(32, help="Examples per step."),
    lr: float = typer.Option(5e-5, help="Peak learning rate (AdamW, warmup then linear decay)."),
    max_length: int = typer.Option(128, help="Tokens per example (a pair counts both)."),
    seed: int = typer.Option(0, help="Seed for the head and batch order."),
    bf16: bool | None = typer.Option(None, help="bf16 autocast (default: where supported)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    save_every: int = typer.Option(500, help="Steps between mid-epoch checkpoints."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different run in OUT."),
    trust_remote_code: bool = typer.Option(False, help="Allow custom model code from the hub."),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Fine-tune the teacher on a GLUE task: a model folder whose logits stage one can cache."""
    from pipeline.tasks.teacher_finetune import TeacherFinetuneConfig
    from pipeline.tasks.teacher_finetune import teacher_finetune as run

    metrics = run(
        TeacherFinetuneConfig(
            task=task,
            out=out,
            teacher=teacher,
            glue_dir=glue_dir,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_length=max_length,
            seed=seed,
            bf16=bf16,
            device=device,
            save_every=save_every,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            trust_remote_code=trust_remote_code,
        )
    )
    print(json.dumps(metrics, indent=2))
