"""`pipeline evaluate`: every comparison row, task and seed, fine-tuned from task caches.

Tasks are GLUE presets (``sst2``) or a user's own (``task:PATH``, a folder of train/dev[/test]
files read with the default columns: text, text_pair, label; see docs/tasks.md), side by side
in one table.

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
7. ``teacher-ft``: the fine-tuned teacher itself, one per seed (seed 0 under
   ``--teachers/TASK-minilm``, seed N under ``TASK-minilm-seedN``), scored by its dev metrics.

Each (task, row, seed) is one `finetune` run under OUT/TASK/ROW/seedN; finished runs are
reused, so an interrupted evaluation resumes where it stopped, and rows that do not depend on
``--student`` (scratch, teacher-frozen, tang, teacher-ft) are reused by an evaluation of
another student. Missing task caches are built with stage one (GLUE from the GLUE folder or
the hub; own tasks from their folder) with the student's own teacher.
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
from pipeline.tasks.own import is_own_task
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
# Shown x100, as GLUE tables do; correlations (and MCC) stay in [-1, 1].
PERCENT = ("accuracy", "f1", "macro_f1", "micro_f1")


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything `pipeline evaluate` takes; its fields are the command's options."""

    student: str = option(MISSING, "The distilled student folder (pipeline train --out).")
    tasks: tuple[str, ...] = option(
        DEFAULT_TASKS, "Comma list of GLUE tasks and own tasks (task:PATH, a folder of files)."
    )
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
            if is_own_task(task):
                if not task.strip()[len("task:") :].strip():
                    raise SraError(f"--tasks {task}: name the task's folder, task:PATH")
                continue
            try:
                get_task(task)
            except ValueError as e:
                raise SraError(f"{e}, or task:PATH for your own data") from None
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown or not self.rows:
            raise SraError(f"--rows takes {', '.join(ROWS)} (got {', '.join(unknown) or 'none'})")
        if self.seeds < 1:
            raise SraError(f"--seeds must be >= 1, got {self.seeds}")


@dataclass(frozen=True)
class EvalTask:
    """One entry of --tasks, resolved: the task, and the corpus stage one embeds it from."""

    spec: str  # as given: "sst2" or "task:data/trec"
    task: TaskSpec
    source: dict[str, Any] | None = None  # own tasks: the data's identity (files, reading)

    @property
    def own(self) -> bool:
        return self.source is not None

    @property
    def corpus(self) -> str:
        return self.spec.strip() if self.own else f"glue:{self.task.name}"


def resolve_tasks(specs: tuple[str, ...]) -> list[EvalTask]:
    """Each --tasks entry as an EvalTask; own tasks are read (and checked) now, so a bad file
    is one line before anything runs. Two tasks of one name would share run folders: refused."""
    from pipeline.tasks.corpus import load_task_corpus

    tasks = []
    for spec in specs:
        if is_own_task(spec):
            corpus = load_task_corpus(spec.strip())
            tasks.append(EvalTask(spec, corpus.task, corpus.source))
        else:
            tasks.append(EvalTask(spec, get_task(spec)))
    names = [t.task.name for t in tasks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SraError(
            f"--tasks names task {twice[0]!r} twice (own tasks are named after their folder); "
            "give each task its own folder name"
        )
    return tasks


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Run what is missing, then return {task: {row: {metric: [per seed]}}} and the table."""
    from student.encoder import StudentEncoder
    from student.finetuning.config import FinetuneConfig
    from student.finetuning.loop import finetune

    tasks = resolve_tasks(cfg.tasks)
    teacher = StudentEncoder.from_pretrained(cfg.student).config.teacher
    results: dict[str, Any] = {}
    for et in tasks:
        task = et.task
        cache = _task_cache(et, teacher, cfg)
        ft_cache = None
        if "tang" in cfg.rows or "sra-tsd" in cfg.rows:
            ft_cache = _finetuned_cache(et, teacher, cache, cfg)
        results[task.name] = {}
        for row in cfg.rows:
            if row == "teacher-ft":
                scores = [_teacher_metrics(et, teacher, seed, cfg) for seed in range(cfg.seeds)]
                results[task.name][row] = {m: [float(s[m]) for s in scores] for m in task.metrics}
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
    table = markdown_table(results, [t.task for t in tasks], cfg.rows)
    cfg.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "student": cfg.student,
        "seeds": cfg.seeds,
        "tasks": {t.task.name: t.spec for t in tasks},
        "results": results,
    }
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


def _task_cache(et: EvalTask, teacher: str, cfg: EvaluateConfig) -> Path:
    """A cache of this task made by the student's teacher: found under --caches (an own
    task's only when made from the same files, read the same way), or built."""
    for candidate in sorted(cfg.caches.glob(f"*/{TASK_NAME}")):
        try:
            cache = open_cache(candidate.parent, checksums=False)
            made_by = str(cache.manifest.config.get("teacher", {}).get("name", ""))
            if read_task(cache).task.name != et.task.name or (teacher and made_by != teacher):
                continue
            if et.own and not _same_data(cache.manifest.config.get("corpus", {}), et.source):
                continue
            return candidate.parent
        except CacheError:
            continue
    from pipeline.embedding import EmbedConfig
    from pipeline.tasks.corpus import TaskOptions, embed_task

    out = cfg.caches / f"{et.task.name}-{_slug(teacher)}"
    if et.own and (out / "manifest.json").is_file():
        raise SraError(
            f"{out} holds a cache of other {et.task.name} data (or read otherwise); delete it "
            "or pass another --caches"
        )
    print(f"building the task cache {out} (stage one, teacher {teacher})", file=sys.stderr)
    embed_task(
        EmbedConfig(
            corpus=et.corpus,
            out=out,
            teacher=teacher or None,  # the default name resolves to the packaged copy
            progress=cfg.progress,
        ),
        TaskOptions(glue_dir=None if et.own else cfg.glue_dir),
    )
    return out


def _same_data(corpus: dict[str, Any], source: dict[str, Any] | None) -> bool:
    """Whether a cache's corpus is this own task's data: the same files (by content) read
    with the same options."""
    made = corpus.get("task") if isinstance(corpus, dict) else None
    if not isinstance(made, dict) or source is None:
        return False
    keys = ("task", "files", "read", "dataset", "config", "content_sha256")
    return all(_json(made.get(k)) == _json(source.get(k)) for k in keys)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def augment_copies(train_examples: int, augment: int | None) -> int:
    """Variants per training example: as asked, else about AUGMENT_TARGET in all (1 to 20)."""
    if augment is not None:
        return augment
    return max(1, min(20, AUGMENT_TARGET // max(1, train_examples)))


def teacher_folder(et: EvalTask, teacher: str, seed: int, cfg: EvaluateConfig) -> Path:
    """Where the teacher fine-tuned on this task with this seed lives: TASK-minilm (seed 0,
    the folder every earlier evaluation made), TASK-minilm-seedN."""
    name = f"{et.task.name}-{_slug(teacher)}"
    return cfg.teachers / (name if seed == 0 else f"{name}-seed{seed}")


def _teacher(et: EvalTask, teacher: str, seed: int, cfg: EvaluateConfig) -> Path:
    """The fine-tuned teacher of this task and seed: found, or made by teacher-finetune."""
    from pipeline.tasks.teacher_finetune import TeacherFinetuneConfig, teacher_finetune

    folder = teacher_folder(et, teacher, seed, cfg)
    if not (folder / "metrics.json").is_file():
        print(
            f"fine-tuning the teacher on {et.task.name} (seed {seed}) into {folder}",
            file=sys.stderr,
        )
        teacher_finetune(
            TeacherFinetuneConfig(
                task=et.spec.strip() if et.own else et.task.name,
                out=folder,
                teacher=teacher or None,
                glue_dir=None if et.own else cfg.glue_dir,
                seed=seed,
                run=RunOptions(progress=cfg.progress),
            )
        )
    return folder


def _teacher_metrics(et: EvalTask, teacher: str, seed: int, cfg: EvaluateConfig) -> dict[str, Any]:
    """The fine-tuned teacher's dev metrics (its metrics.json: the best epoch on dev, selected
    as every student row is)."""
    folder = _teacher(et, teacher, seed, cfg)
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        raise SraError(
            f"{folder / 'metrics.json'} is unreadable ({e}); fine-tune it again"
        ) from None


def _finetuned_cache(et: EvalTask, teacher: str, plain: Path, cfg: EvaluateConfig) -> Path:
    """The task cache of a teacher fine-tuned on the task (seed 0): its logits on train, dev
    and the augmented examples. The fine-tuned teacher is made first when --teachers lacks it."""
    from pipeline.embedding import EmbedConfig
    from pipeline.tasks.augment import AugmentConfig
    from pipeline.tasks.corpus import TaskOptions, embed_task
    from pipeline.teacher import weights_sha256

    folder = _teacher(et, teacher, 0, cfg)
    copies = augment_copies(
        read_task(open_cache(plain, checksums=False)).splits["train"], cfg.augment
    )
    out = cfg.caches / f"{et.task.name}-{folder.name}-aug{copies}"
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
        EmbedConfig(corpus=et.corpus, out=out, teacher=str(folder), progress=cfg.progress),
        TaskOptions(
            glue_dir=None if et.own else cfg.glue_dir,
            logits=True,
            augment=AugmentConfig(copies=copies),
        ),
    )
    return out


def _slug(teacher: str) -> str:
    name = teacher.rstrip("/").rsplit("/", 1)[-1].lower() or "teacher"
    return "minilm" if name == "all-minilm-l6-v2" else name
