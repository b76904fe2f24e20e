"""`pipeline evaluate`: every comparison row, task and seed, fine-tuned from task caches.

Rows (what each shows):

1. ``sra``: the SRA-distilled student, fine-tuned (encoder and MLP head);
2. ``scratch``: the same architecture from random initialisation, no distillation: what
   distillation buys;
3. ``sra-frozen``: the distilled student frozen, a linear head on its vectors;
4. ``teacher-frozen``: the teacher's cached vectors, frozen, a linear head (no teacher load);

and, on request (``--rows ...,sra-coop``), the paper's cooperation with distillation on the
task itself: row 1 plus ``--sra-weight 1`` (keep approximating the cached teacher vectors of
the task's sentences while learning the labels).

Task-specific distillation (``--rows ...,tang,sra-tsd,teacher-ft``) needs the teacher
fine-tuned on each task (found under ``--teachers``, else made by ``teacher-finetune``) and a
task cache of its logits on the training examples plus augmented variants (found under
``--caches``, else built by stage one):

5. ``tang``: the BiLSTM from random initialisation, trained on gold labels plus MSE to the
   fine-tuned teacher's logits on the augmented transfer set (Tang et al., 2019);
6. ``sra-tsd``: the same, starting from the SRA-distilled student (the paper's combined
   setting);
7. ``teacher-ft``: the fine-tuned teacher itself, scored from its cached dev logits.

Each (task, row, seed) is one `finetune` run under OUT/TASK/ROW/seedN; finished runs are
reused, so an interrupted evaluation resumes where it stopped. Missing task caches are built
with stage one from the GLUE folder (or the hub) with the student's own teacher.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import MISSING, dataclass, replace
from pathlib import Path
from typing import Any

from cache import CacheError, open_cache
from cache.errors import SraError
from cache.options import option
from cache.task_data import TASK_NAME, read_task
from cache.tasks import TaskSpec, get_task
from student.runs.options import RunOptions

ROWS: dict[str, str] = {
    "sra": "SRA student, fine-tuned",
    "scratch": "same BiLSTM, random init, no distillation",
    "sra-frozen": "SRA student frozen + linear head",
    "teacher-frozen": "teacher vectors frozen + linear head",
    "sra-coop": "SRA student, fine-tuned with --sra-weight 1",
    "tang": "Tang et al.: BiLSTM, random init, logits + augmentation",
    "sra-tsd": "SRA student + task-specific distillation",
    "teacher-ft": "fine-tuned teacher",
}
TASK_SPECIFIC = ("tang", "sra-tsd", "teacher-ft")
DISTILLED_TRAINED = ("sra", "sra-coop", "sra-tsd")  # rows that fine-tune the distilled student
AUGMENT_TARGET = 12_000  # augmented examples per task by default (at least 1 per example)
DEFAULT_ROWS = ("sra", "scratch", "sra-frozen", "teacher-frozen")
DEFAULT_TASKS = ("sst2", "mrpc", "rte", "cola", "stsb")
PERCENT = ("accuracy", "f1")  # shown x100, as GLUE tables do; correlations stay in [-1, 1]


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything `pipeline evaluate` takes; its fields are the command's options."""

    student: str = option(MISSING, "The distilled student folder (pipeline train --out).")
    tasks: tuple[str, ...] = option(DEFAULT_TASKS, "Comma list of GLUE tasks.")
    seeds: int = option(3, "Seeds per task and row (mean ± std).")
    rows: tuple[str, ...] = option(
        DEFAULT_ROWS,
        "Comparison rows: sra, scratch, sra-frozen, teacher-frozen, sra-coop, and the "
        "task-specific tang, sra-tsd, teacher-ft.",
    )
    glue_dir: str | None = option(
        None, "GLUE folder for task caches not built yet (default: $GLUE_DIR, else the hub)."
    )
    caches: Path = option(Path("caches"), "Where task caches are found or built.")
    out: Path = option(Path("runs/evaluate"), "Runs, results.md and results.json.")
    epochs: int | None = option(None, "Override finetune's epochs.")
    # The encoder's rate in the rows that fine-tune the distilled student (sra, sra-coop,
    # sra-tsd); a random init has nothing to keep, so scratch and tang stay at finetune's lr.
    encoder_lr: float | None = option(
        None, "finetune's --encoder-lr in the rows that fine-tune the distilled student."
    )
    teachers: Path = option(
        Path("teachers"), "Fine-tuned teachers (rows tang, sra-tsd, teacher-ft): found or made."
    )
    augment: int | None = option(
        None, "Augmented variants per training example (default: ~12k per task, 1..20)."
    )
    progress: bool = option(True, "Show progress.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "rows", tuple(self.rows))
        for name in ("caches", "out", "teachers"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        for task in self.tasks:
            try:
                get_task(task)
            except ValueError as e:
                raise SraError(str(e)) from None
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown or not self.rows:
            raise SraError(f"--rows takes {', '.join(ROWS)} (got {', '.join(unknown) or 'none'})")
        if self.seeds < 1:
            raise SraError(f"--seeds must be >= 1, got {self.seeds}")


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Run what is missing, then return {task: {row: {metric: [per seed]}}} and the table."""
    from student.encoder import StudentEncoder
    from student.finetuning.config import FinetuneConfig
    from student.finetuning.loop import finetune

    tasks = [get_task(t) for t in cfg.tasks]
    teacher = StudentEncoder.from_pretrained(cfg.student).config.teacher
    results: dict[str, Any] = {}
    for task in tasks:
        cache = _task_cache(task, teacher, cfg)
        ft_cache = None
        if any(r in TASK_SPECIFIC for r in cfg.rows):
            ft_cache = _finetuned_cache(task, teacher, cache, cfg)
        results[task.name] = {}
        for row in cfg.rows:
            if row == "teacher-ft":
                assert ft_cache is not None
                scores = _teacher_scores(task, ft_cache)
                results[task.name][row] = {m: [scores[m]] for m in task.metrics}
                continue
            runs = []
            for seed in range(cfg.seeds):
                run_cfg = FinetuneConfig(
                    student={
                        "scratch": "scratch",
                        "teacher-frozen": "teacher",
                        "tang": "scratch",
                    }.get(row, cfg.student),
                    task=task.name,
                    cache=(ft_cache or cache) if row in TASK_SPECIFIC else cache,
                    distill_weight=1.0 if row in TASK_SPECIFIC else 0.0,
                    out=cfg.out / task.name / row / f"seed{seed}",
                    freeze_encoder=row == "sra-frozen",
                    sra_weight=1.0 if row == "sra-coop" else 0.0,
                    encoder_lr=cfg.encoder_lr if row in DISTILLED_TRAINED else None,
                    seed=seed,
                    run=RunOptions(progress=cfg.progress),
                )
                if cfg.epochs is not None:
                    run_cfg = replace(run_cfg, epochs=cfg.epochs)
                print(f"== {task.name} / {row} / seed {seed}", file=sys.stderr)
                runs.append(finetune(run_cfg))
            results[task.name][row] = {m: [float(r[m]) for r in runs] for m in task.metrics}
    table = markdown_table(results, tasks, cfg.rows)
    cfg.out.mkdir(parents=True, exist_ok=True)
    summary = {"student": cfg.student, "seeds": cfg.seeds, "results": results}
    if any(r in TASK_SPECIFIC for r in cfg.rows):
        summary["teachers"] = str(cfg.teachers)
    (cfg.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (cfg.out / "results.md").write_text(table + "\n")
    return summary | {"table": table}


def markdown_table(
    results: dict[str, Any], tasks: list[TaskSpec], rows: tuple[str, ...] | list[str]
) -> str:
    """Rows x tasks, mean ± std over seeds of each task's metrics, plus the average."""
    header = ["model"] + [f"{t.name} {'/'.join(t.metrics)}" for t in tasks] + ["avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells, mains = [ROWS[row]], []
        for t in tasks:
            values = results[t.name][row]
            parts = []
            for metric in t.metrics:
                scale = 100 if metric in PERCENT else 1
                xs = [x * scale for x in values[metric]]
                mean = statistics.fmean(xs)
                std = statistics.stdev(xs) if len(xs) > 1 else 0.0
                digits = 1 if scale == 100 else 3
                parts.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
            cells.append(" / ".join(parts))
            # The average puts every main metric on a 0-100 scale, as the GLUE score does.
            mains.append(statistics.fmean(values[t.main_metric]) * 100)
        cells.append(f"{statistics.fmean(mains):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _task_cache(task: TaskSpec, teacher: str, cfg: EvaluateConfig) -> Path:
    """A cache of this task made by the student's teacher: found under --caches, or built."""
    for candidate in sorted(cfg.caches.glob(f"*/{TASK_NAME}")):
        try:
            cache = open_cache(candidate.parent, checksums=False)
            made_by = str(cache.manifest.config.get("teacher", {}).get("name", ""))
            if read_task(cache).task.name == task.name and (not teacher or made_by == teacher):
                return candidate.parent
        except CacheError:
            continue
    from pipeline.embedding import EmbedConfig
    from pipeline.tasks.corpus import TaskOptions, embed_task

    out = cfg.caches / f"{task.name}-{_slug(teacher)}"
    print(f"building the task cache {out} (stage one, teacher {teacher})", file=sys.stderr)
    embed_task(
        EmbedConfig(
            corpus=f"glue:{task.name}",
            out=out,
            teacher=teacher or None,  # the default name resolves to the packaged copy
            progress=cfg.progress,
        ),
        TaskOptions(glue_dir=cfg.glue_dir),
    )
    return out


def augment_copies(train_examples: int, augment: int | None) -> int:
    """Variants per training example: as asked, else about AUGMENT_TARGET in all (1 to 20)."""
    if augment is not None:
        return augment
    return max(1, min(20, AUGMENT_TARGET // max(1, train_examples)))


def _finetuned_cache(task: TaskSpec, teacher: str, plain: Path, cfg: EvaluateConfig) -> Path:
    """The task cache of a teacher fine-tuned on the task: its logits on train, dev and the
    augmented examples. The fine-tuned teacher is made first when --teachers lacks it."""
    from pipeline.embedding import EmbedConfig
    from pipeline.tasks.augment import AugmentConfig
    from pipeline.tasks.corpus import TaskOptions, embed_task
    from pipeline.tasks.teacher_finetune import TeacherFinetuneConfig, teacher_finetune
    from pipeline.teacher import weights_sha256

    folder = cfg.teachers / f"{task.name}-{_slug(teacher)}"
    if not (folder / "metrics.json").is_file():
        print(f"fine-tuning the teacher on {task.name} into {folder}", file=sys.stderr)
        teacher_finetune(
            TeacherFinetuneConfig(
                task=task.name,
                out=folder,
                teacher=teacher or None,
                glue_dir=cfg.glue_dir,
                run=RunOptions(progress=cfg.progress),
            )
        )
    copies = augment_copies(
        read_task(open_cache(plain, checksums=False)).splits["train"], cfg.augment
    )
    out = cfg.caches / f"{task.name}-{folder.name}-aug{copies}"
    try:
        found = open_cache(out, checksums=False)
    except CacheError:
        found = None
    if found is not None and found.manifest.status == "complete":
        # The name says which task and budget, not which teacher: two teachers' folders of
        # the same name (teachers/rte-minilm, teachers/stilts-stsb/rte-minilm) meet here, so
        # the weights decide.
        made_by = found.manifest.config.get("teacher", {})
        if made_by.get("weights_sha256") != weights_sha256(str(folder)):
            raise SraError(
                f"{out} holds the logits of {made_by.get('name', 'another teacher')}, not "
                f"{folder}: pass another --caches for this teacher (or delete that cache)"
            )
        return out
    print(
        f"building the task cache {out} (logits of {folder}, {copies} augmented per example)",
        file=sys.stderr,
    )
    embed_task(
        EmbedConfig(
            corpus=f"glue:{task.name}", out=out, teacher=str(folder), progress=cfg.progress
        ),
        TaskOptions(glue_dir=cfg.glue_dir, logits=True, augment=AugmentConfig(copies=copies)),
    )
    return out


def _teacher_scores(task: TaskSpec, cache: Path) -> dict[str, float]:
    """The fine-tuned teacher's dev metrics, from the logits stage one cached: no teacher run."""
    from cache.task_data import read_examples, read_logits
    from cache.tasks import dev_splits
    from student.finetuning.metrics import task_scores

    opened = open_cache(cache)
    split = dev_splits(task)[0]
    logits = read_logits(opened, split)
    predictions = logits[:, 0] if task.is_regression else logits.argmax(-1)
    labels = read_examples(opened, split).column("label").to_numpy()
    return task_scores(task, predictions, labels)


def _slug(teacher: str) -> str:
    name = teacher.rstrip("/").rsplit("/", 1)[-1].lower() or "teacher"
    return "minilm" if name == "all-minilm-l6-v2" else name
