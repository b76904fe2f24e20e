"""Fine-tune a student (or a fresh one, or the teacher's frozen vectors) on a task: a GLUE
preset or a user's own (classification, multi-label or regression).

Reads only a task cache (``pipeline embed --corpus glue:TASK`` or ``--corpus task:PATH``):
token ids, labels and the teacher's vectors of the task's own sentences. No teacher is
loaded. ``finetune`` reads top to bottom:

    task cache  the task, its splits, the student (checked against the cache)
    run folder  done already? resume? refuse? (student.runs.folder: one rule for every command)
    model       FinetuneModel (encoder + head), dense AdamW + SparseAdam, the schedule
    epochs      batches of similar length; loss = labels + logits + SRA; dev after each epoch
    outputs     the best (or last) epoch's predictions, metrics, encoder and head; the folder
                becomes a model ``TaskModel.from_pretrained`` loads, with its card and speed

The loss by problem: classification, cross-entropy (softmax); multi-label, binary
cross-entropy with logits on each label (a label is predicted when its logit is above 0);
regression, MSE on the score mapped to [0, 1] (``TaskSpec.to_unit``; predictions map back).

The run folder OUT ends up holding ``finetune.json`` (the run: options, identity, status,
head), ``metrics.jsonl`` (per-epoch training loss and dev metrics) and what ``outputs.py``
lists; ``checkpoint/`` (the last finished epoch) while it trains.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cache import Cache, open_cache
from cache.errors import SraError
from cache.files import sha256_file, write_atomic
from cache.options import option_values
from cache.task_data import AUGMENTED, read_logits, read_task, rebuild_hint
from cache.tasks import TaskSpec, dev_splits, same_task
from student.config import StudentShape
from student.encoder import StudentEncoder
from student.finetuning.card import measure_speed, model_card
from student.finetuning.config import SCRATCH, TEACHER, FinetuneConfig
from student.finetuning.data import (
    Examples,
    Sentences,
    concat,
    example_batches,
    load_examples,
    load_sentences,
    load_texts,
    sentence_ids,
)
from student.finetuning.head import FinetuneModel, TaskHead, distill_loss, frozen_features
from student.finetuning.optim import DenseAndSparse
from student.finetuning.outputs import (
    ENCODER_DIR,
    HEAD_FILE,
    METRICS_JSON,
    TASK_MODEL_FILE,
    predict,
    read_metrics,
    save_outputs,
    write_predictions,
)
from student.finetuning.state import EpochState, load_checkpoint, save_checkpoint
from student.model import BiLSTMEncoder
from student.runs.folder import RunFolder, RunKind
from student.runs.progress import Progress
from student.runs.schedule import lr_at
from student.runtime import autocast, resolve_bf16, resolve_device
from student.task_folder import CARD_FILE, task_model_info
from student.training.setup import cache_tokenizer, student_config


def _legacy(record: dict[str, Any], folder: Path) -> tuple[dict[str, Any], bool]:
    """finetune.json before the shared run format: the identity at the top, and a run was
    finished when its metrics.json was written."""
    identity = {k: record.get(k) for k in ("options", "student_weights", "cache")}
    return identity, (folder / METRICS_JSON).is_file()


FINETUNE_RUN = RunKind(
    name="finetune",
    run_file="finetune.json",
    format="sra-finetune-run",
    outputs=(METRICS_JSON, "predictions-*.tsv", ENCODER_DIR, HEAD_FILE, TASK_MODEL_FILE, CARD_FILE),
    legacy=_legacy,
)


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune into ``cfg.out``; returns the dev metrics written to metrics.json."""
    device = resolve_device(cfg.run.device)
    bf16 = resolve_bf16(cfg.run.bf16, device)

    # -- the task cache and the student ---------------------------------------------------
    cache = open_cache(cfg.cache)
    task_data = read_task(cache)
    task = task_data.task
    if cfg.task is not None and not same_task(cfg.task, task):
        raise SraError(
            f"--task {cfg.task} but {cfg.cache} holds {task.name}; leave --task out to use the "
            f"cache's task, or build a cache of {cfg.task} (pipeline embed --corpus glue:TASK "
            "or task:PATH)"
        )
    cfg.check_task(task)
    splits = [s for s in task_data.splits if s != AUGMENTED]
    evals = list(dev_splits(task))
    for split in ("train", *evals):
        if split not in splits:
            raise SraError(
                f"task cache {cfg.cache} has no {split!r} split; rebuild it with "
                f"`{rebuild_hint(task)}` from data that holds one"
            )
    encoder = load_student(cfg, cache)
    if encoder is not None and cfg.encoder_dropout is not None:
        encoder.model.set_dropout(cfg.encoder_dropout)
    sentences = load_sentences(cache, cfg.pooling)
    if cfg.sra_weight > 0 and encoder is not None:
        wanted, have = encoder.config.output_dim, sentences.vectors.shape[1]
        if wanted != have:
            raise SraError(
                f"the student approximates {wanted}-d teacher vectors "
                f"({encoder.config.teacher_pooling}), but --pooling {cfg.pooling} in {cfg.cache} "
                f"is {have}-d; pass --pooling {encoder.config.teacher_pooling} with a task cache "
                "that has those columns"
            )
    data = {s: load_examples(cache, s, task.pair) for s in splits}
    for split in ("train", *evals):
        if not data[split].labelled:
            raise SraError(f"split {split!r} of {cfg.cache} has examples without labels")
    train, train_logits = data["train"], None
    if cfg.distill_weight > 0:
        # The transfer set: the training examples plus, when the cache has them, augmented
        # variants that only the teacher labelled (Tang et al. 2019).
        train_logits = read_logits(cache, "train")
        if cfg.augmented and AUGMENTED in task_data.splits:
            train = concat(train, load_examples(cache, AUGMENTED, task.pair))
            train_logits = np.concatenate([train_logits, read_logits(cache, AUGMENTED)])

    # -- the run folder: finished, resume, or refuse --------------------------------------
    identity = cfg.identity(
        task=task.name,
        cache=cache.manifest.fingerprint,
        student_weights=student_weights(cfg, encoder),
    )
    run = RunFolder(cfg.out, FINETUNE_RUN)
    start = run.prepare(
        identity,
        options=option_values(cfg),
        overwrite=cfg.run.overwrite,
        extra={"task": task.name, "student": cfg.student},
    )
    if start.done:
        return read_metrics(cfg.out)

    # -- model, optimiser, schedule -------------------------------------------------------
    torch.manual_seed(cfg.seed)
    dim = cache.dim if encoder is None else encoder.config.output_dim
    head = TaskHead(dim, task.pair, task.num_labels, cfg.head_kind, cfg.head_hidden, cfg.dropout)
    model = FinetuneModel(encoder.model if encoder is not None else None, head).to(device)
    pad = encoder.config.pad_id if encoder is not None else 0
    features = None
    if cfg.frozen:  # vectors never change: compute each sentence's once, train the head only
        needed = np.unique(
            np.concatenate([sentence_ids(train)] + [sentence_ids(data[s]) for s in splits])
        )
        features = frozen_features(model, sentences, needed, pad, device, bf16)
    optimizer = DenseAndSparse(model, cfg.optim, cfg.encoder_lr)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    epochs = cfg.epochs or epochs_for(steps_per_epoch, cfg.frozen)
    total = steps_per_epoch * epochs
    state = EpochState()
    if start.checkpoint is not None:
        state = load_checkpoint(start.checkpoint, model, optimizer, device)
        print(f"resuming {cfg.out} after epoch {state.epoch}", file=sys.stderr)
    run.metrics.trim(state.step)

    # -- epochs ---------------------------------------------------------------------------
    with Progress("finetune", total, done=state.step, enabled=cfg.run.progress) as progress:
        progress.note(
            f"fine-tuning {cfg.student} on {task.name}: {len(train):,} train / "
            + " / ".join(f"{len(data[s]):,} {s}" for s in evals)
            + f" examples, {cfg.head_kind} head{', encoder frozen' if cfg.frozen else ''}, "
            f"{device.type}{' bf16' if bf16 else ''}, {epochs} epochs of {steps_per_epoch:,} steps"
        )
        for epoch in range(state.epoch, epochs):
            if state.stale >= cfg.patience > 0 and cfg.select == "best":
                break
            rng = np.random.default_rng([cfg.seed, epoch])
            model.train()
            losses: list[float] = []
            t0 = time.perf_counter()
            for rows in list(example_batches(train, sentences.lengths, cfg.batch_size, rng)):
                optimizer.set_lr(lr_at(state.step, total, cfg.optim))
                with autocast(device, bf16):
                    u, v = model.vectors(train, rows, sentences, features, pad, device)
                    out = model.head(u, v)
                loss = task_loss(
                    cfg, task, out.float(), train, rows, train_logits, (u, v), sentences
                )
                if not torch.isfinite(loss):
                    raise SraError(
                        f"the loss became {loss.item()} at step {state.step} (epoch {epoch + 1}); "
                        f"lower --lr and rerun with --overwrite; the last finished epoch is kept "
                        f"in {run.checkpoints.folder}"
                    )
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(optimizer.dense, cfg.optim.grad_clip)
                optimizer.step()
                losses.append(loss.item())
                state.step += 1
                progress.update(state.step, f"epoch {epoch + 1}/{epochs} · loss {losses[-1]:.4f}")
            seconds = time.perf_counter() - t0
            scores = {
                s: predict(model, task, data[s], sentences, features, pad, device, bf16)[0]
                for s in evals
            }
            record = {
                "epoch": epoch + 1,
                "step": state.step,
                "loss": float(np.mean(losses)),
                "examples_per_s": round(len(train) / seconds, 1),
                **{f"{s}_{k}": v for s, m in scores.items() for k, v in m.items()},
            }
            run.metrics.append(record)
            progress.note(
                " ".join(
                    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in record.items()
                )
            )
            main = scores[evals[0]][task.main_metric]
            if state.best is None or main > state.best or cfg.select == "last":
                state.best, state.best_epoch, state.stale = main, epoch + 1, 0
                state.best_weights = {
                    k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                }
            else:
                state.stale += 1
            state.epoch = epoch + 1
            save_checkpoint(run, model, optimizer, state)

    # -- outputs ----------------------------------------------------------------------------
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    metrics: dict[str, Any] = {}
    separator = (task_data.columns or {}).get("label_separator") or "|"
    for split in splits:
        if split == "train":
            continue
        scores, predictions = predict(
            model, task, data[split], sentences, features, pad, device, bf16
        )
        write_predictions(
            cfg.out / f"predictions-{split}.tsv", task, data[split], predictions, separator
        )
        if split == evals[0]:
            metrics.update(scores)
        elif split in evals:
            metrics[split] = scores
    metrics |= {
        "task": task.name,
        "split": evals[0],
        "epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "seed": cfg.seed,
        "student": cfg.student,
    }
    head = {
        "kind": cfg.head_kind,
        "hidden": cfg.head_hidden,
        "pair": task.pair,
        "outputs": task.num_labels,
    }
    sizes = {s: len(data[s]) for s in splits}
    info = task_model_info(
        task,
        head,
        encoder=encoder is not None,
        columns=task_data.columns,
        trained=provenance(cfg, cache, encoder, task_data.logits, sizes),
    )
    save_outputs(cfg.out, model, encoder, metrics, info)
    # The folder is now a model: time it as a user loads it, on the dev texts, for its card.
    speed = None
    if encoder is not None:
        dev = data[evals[0]]
        speed = measure_speed(
            cfg.out,
            load_texts(cache, dev.first),
            None if dev.second is None else load_texts(cache, dev.second),
        )
    card = model_card(cfg.out, task, info, metrics, speed)
    write_atomic(cfg.out / CARD_FILE, card.encode("utf-8"))
    run.finish(head=head | {"labels": task.labels}, speed=speed)
    if cfg.run.progress:
        print(
            f"{cfg.out}: {task.name} {evals[0]} "
            + ", ".join(f"{k} {metrics[k]:.4f}" for k in task.metrics)
            + f" (epoch {state.best_epoch})",
            file=sys.stderr,
        )
    return metrics


# ================================================================================ the pieces


def provenance(
    cfg: FinetuneConfig,
    cache: Cache,
    encoder: StudentEncoder | None,
    logits: dict | None,
    sizes: dict[str, int],
) -> dict[str, Any]:
    """Where a task model came from, for task_model.json and its card."""
    corpus = cache.manifest.config.get("corpus", {})
    made_by = str(cache.manifest.config.get("teacher", {}).get("name", "")) or None
    return {
        "student": cfg.student,
        "teacher": encoder.config.teacher if encoder is not None else made_by,
        "cache": str(cfg.cache),
        "cache_fingerprint": cache.manifest.fingerprint,
        "source": corpus.get("task") if isinstance(corpus, dict) else None,
        "examples": sizes,
        "seed": cfg.seed,
        "frozen": cfg.frozen,
        "distill_weight": cfg.distill_weight,
        "logits_teacher": (logits or {}).get("teacher") if cfg.distill_weight > 0 else None,
    }


def task_loss(
    cfg: FinetuneConfig,
    task: TaskSpec,
    out: torch.Tensor,
    ex: Examples,
    rows: np.ndarray,
    teacher_logits: np.ndarray | None,
    vectors: tuple[torch.Tensor, torch.Tensor | None],
    sentences: Sentences,
) -> torch.Tensor:
    """The weighted sum of what fine-tuning learns from, for examples ``rows``: the gold
    labels, a fine-tuned teacher's logits, and the teacher's sentence vectors (SRA)."""
    device = out.device
    loss = out.new_zeros(())
    if not task.is_regression:  # [batch, labels], even for a multi-label task of one label
        out = out.reshape(len(rows), -1)
    labels = ex.labels[rows]
    # Rows without a gold label (the augmented transfer set) learn from the teacher only.
    if task.is_regression:
        known = ~np.isnan(labels)
    elif task.is_multilabel:
        known = (labels >= 0).all(axis=1)
    else:
        known = labels >= 0
    if cfg.label_weight > 0 and known.any():
        keep = torch.from_numpy(known).to(device)
        gold = torch.from_numpy(labels[known]).to(device)
        if task.is_regression:
            # Scores mapped to [0, 1]: MSE on STS-B's 0-5 scale makes gradients 25x larger
            # than cross-entropy's and trains far worse at the same learning rate.
            label_loss = F.mse_loss(out[keep], task.to_unit(gold.float()))
        elif task.is_multilabel:
            label_loss = F.binary_cross_entropy_with_logits(out[keep], gold.float())
        else:
            label_loss = F.cross_entropy(out[keep], gold)
        loss = loss + cfg.label_weight * label_loss
    if teacher_logits is not None:
        target = torch.from_numpy(teacher_logits[rows]).to(device)
        if task.is_regression:  # the teacher predicts the raw score; the head, its unit form
            target = task.to_unit(target[:, 0])
        loss = loss + cfg.distill_weight * distill_loss(
            out, target, cfg.distill_loss, cfg.temperature, multilabel=task.is_multilabel
        )
    if cfg.sra_weight > 0 and not cfg.frozen:
        # Keep approximating the teacher on the task's own sentences (cosine: the student may
        # have been trained on unit-length targets, the cache holds raw vectors).
        u, v = vectors
        targets = [(u, ex.first[rows])] + ([] if v is None else [(v, ex.second[rows])])
        for vec, ids in targets:
            t = torch.from_numpy(sentences.vectors[ids]).to(device)
            loss = loss + cfg.sra_weight * (1 - F.cosine_similarity(vec.float(), t).mean())
    return loss


def epochs_for(steps_per_epoch: int, frozen: bool) -> int:
    """3 epochs, or more on small tasks (up to 10) so that they get about 600 steps.

    A head on frozen vectors costs next to nothing per epoch (the vectors are computed once),
    so it always gets 10: a linear head is still improving after 3 epochs of SST-2.
    """
    return 10 if frozen else max(3, min(10, math.ceil(600 / steps_per_epoch)))


def load_student(cfg: FinetuneConfig, cache: Cache) -> StudentEncoder | None:
    """The encoder to fine-tune, checked against the task cache's teacher and tokenizer."""
    tokenizer = cache_tokenizer(cache)
    if cfg.student == TEACHER:
        return None
    if cfg.student == SCRATCH:
        config = student_config(StudentShape(), cache, tokenizer)
        return StudentEncoder(config, BiLSTMEncoder(config), tokenizer=tokenizer)
    folder = Path(cfg.student)
    if not (folder / "config.json").is_file() and (folder / ENCODER_DIR / "config.json").is_file():
        folder = folder / ENCODER_DIR  # a fine-tuned run: start from its encoder
    encoder = StudentEncoder.from_pretrained(folder)
    if encoder.tokenizer.get_vocab(with_added_tokens=True) != tokenizer.get_vocab(
        with_added_tokens=True
    ):
        raise SraError(
            f"the student {cfg.student} and the task cache {cache.path} use different "
            f"vocabularies; build the task cache with the student's teacher "
            f"({encoder.config.teacher or 'unknown'})"
        )
    teacher = str(cache.manifest.config.get("teacher", {}).get("name", ""))
    # Only --sra-weight uses the cache's vectors as targets; a cache of a fine-tuned teacher
    # (for its logits) is expected to differ from the student's teacher.
    if (
        cfg.sra_weight > 0
        and encoder.config.teacher
        and teacher
        and encoder.config.teacher != teacher
    ):
        print(
            f"warning: the student was distilled from {encoder.config.teacher} but the task "
            f"cache {cache.path} holds vectors of {teacher}; --sra-weight then pulls it "
            "towards another teacher",
            file=sys.stderr,
        )
    return encoder


def student_weights(cfg: FinetuneConfig, encoder: StudentEncoder | None) -> str:
    """Which student: a hash of its weights file, or scratch / teacher."""
    if encoder is None or cfg.student == SCRATCH:
        return cfg.student
    folder = Path(cfg.student)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        weights = folder / ENCODER_DIR / "model.safetensors"
    return sha256_file(weights)[:16]
