"""Stage two: train the BiLSTM student to reproduce the teacher's sentence vectors.

The teacher never runs here: the stage-one cache holds its token ids and sentence vectors, and
the student learns to map the first to the second (sentence representation approximation, Wu
et al. 2020). ``train(TrainConfig(cache=..., out=...))`` reads top to bottom:

    setup       processes (torchrun or not), the cache, the student's shape, bf16
    data        TrainData (per-rank, per-worker streams) and the held-out rows
    model       BiLSTMEncoder (PCA of the teacher's embeddings), the objectives' heads, AdamW
    run folder  done already? resume? refuse? (student.runs.folder: one rule for every command)
    loop        prepare, forward, loss, clip, step; log, validate, checkpoint
    finish      StudentEncoder.save_pretrained(RUN)

What is minimised is the objectives' business (``objectives/``: distillation, and the bi-LM or
real/fake losses beside it); this loop names none of them.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cache import open_cache
from cache.errors import SraError
from cache.options import option_values
from student.encoder import StudentEncoder
from student.model import BiLSTMEncoder
from student.runs.folder import RunFolder, RunKind
from student.runs.schedule import lr_at
from student.runtime import autocast, resolve_bf16
from student.training.config import TrainConfig
from student.training.data import (
    DataPosition,
    StepCounter,
    TrainData,
    check_trainable,
    epoch_batches,
)
from student.training.dist import Dist
from student.training.meter import Meter
from student.training.objectives import Objectives, Setup
from student.training.setup import cache_tokenizer, student_config, teacher_embeddings
from student.training.state import TrainState, load_state, save_state
from student.training.validation import HeldOut, compute_split, validation_batches

TRAIN_RUN = RunKind(
    name="training",
    run_file="run.json",
    format="sra-train-run",
    # the student and what `pipeline report` adds
    outputs=("config.json", "model.safetensors", "tokenizer.json", "report.md", "*.png"),
)


def train(cfg: TrainConfig) -> Path:
    """Train a student from a cache into ``cfg.out``; returns the run folder."""
    dist = Dist.start(cfg.run.device)
    try:
        return _train(cfg, dist)
    finally:
        dist.stop()


def _train(cfg: TrainConfig, dist: Dist) -> Path:
    def say(message: str) -> None:
        if dist.rank == 0:
            print(message, file=sys.stderr, flush=True)

    # -- setup: the cache and the student's shape ---------------------------------------------
    cache = open_cache(cfg.cache)
    check_trainable(cache, cfg.data.pooling)
    tokenizer = cache_tokenizer(cache)
    student_cfg = student_config(cfg.student, cache, tokenizer, cfg.data.pooling)
    bf16 = resolve_bf16(cfg.run.bf16, dist.device)
    amp = autocast(dist.device, bf16)

    # -- data: everything is read and checked before the run folder is touched ---------------
    data_cfg = replace(cfg.data, seed=cfg.seed)
    split = compute_split(cache, data_cfg)
    if split.train_rows < 1:
        raise SraError(f"cache {cache.path} leaves no training rows; lower --val-fraction")
    pad_id = student_cfg.pad_id
    data = TrainData(cache, data_cfg, split, pad_id=pad_id, rank=dist.rank, world_size=dist.world)
    steps_in = StepCounter(data, dist)
    total = steps_in.total(cfg.epochs, cfg.max_steps)

    # -- model, objectives, optimiser ----------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = BiLSTMEncoder(student_cfg)
    if cfg.init_embeddings == "teacher":
        model.init_embeddings(teacher_embeddings(cache, student_cfg, cfg.seed))
    objectives = Objectives(cfg.objectives, Setup(model, cache, tokenizer, cfg.seed))
    net = TrainingNet(model, objectives).to(dist.device)
    # Dropout masks differ between ranks, as they would for different examples.
    torch.manual_seed(cfg.seed + 1 + dist.rank)
    optimizer = adamw(net, cfg.optim.lr, cfg.optim.weight_decay)
    held_out = HeldOut(
        validation_batches(cache, data_cfg, split, pad_id),
        dist,
        targets=objectives.targets,
        autocast=amp,
    )

    # -- the run folder: finished, resume, or refuse ------------------------------------------
    identity = cfg.identity(
        cache={"fingerprint": cache.manifest.fingerprint, "rows": cache.num_rows},
        student=student_cfg,
        bf16=bf16,
        world=dist.world,
    )
    run = RunFolder(cfg.out, TRAIN_RUN, rank=dist.rank, barrier=dist.barrier)
    start = run.prepare(
        identity,
        options=option_values(cfg),
        overwrite=cfg.run.overwrite,
        extra={"cache": str(cfg.cache.resolve())},
    )
    if start.done:
        return cfg.out
    state = TrainState.start(data.streams)
    if start.checkpoint is not None:
        state = load_state(start.checkpoint, net.load_weights, optimizer, dist)
        say(f"resuming {cfg.out} at step {state.step:,} (epoch {state.epoch}, batch "
            f"{state.epoch_step:,})")  # fmt: skip
    run.metrics.trim(state.step)
    ddp = dist.wrap(net)

    # -- the loop ----------------------------------------------------------------------------
    cadence = cfg.run
    meter = Meter(
        run.metrics,
        total,
        done=state.step,
        progress=cadence.progress and dist.rank == 0,
        log_every=cadence.log_every,
    )
    say(
        f"training on {dist.device} x{dist.world}{' bf16' if bf16 else ''}: "
        f"{split.train_rows:,} rows ({split.held_out:,} held out, {len(held_out)} val batches), "
        f"{total:,} steps"
    )
    with meter:
        while state.step < total:
            if steps_in(state.epoch) == 0:
                raise SraError(f"epoch {state.epoch} gives no training batches on some rank")
            data.set_epoch(state.epoch, state.position)
            for batch in epoch_batches(data, state.epoch):
                if state.epoch_step >= steps_in(state.epoch) or state.step >= total:
                    break
                lr = lr_at(state.step, total, cfg.optim)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                prepared = objectives.prepare(batch, state.step, dist.rank)
                b = batch.to(dist.device)
                with amp:
                    vectors, side = ddp(b.input_ids, b.lengths, prepared)
                loss, logged = objectives.loss(vectors.float(), objectives.targets(b.targets), side)
                # Every rank must agree on stopping, so the check uses the all-reduced values.
                loss_value, sentences, *sums = dist.sum(
                    [loss.detach(), float(len(batch)), *(v.detach() for v in logged.values())]
                )
                loss_value /= dist.world
                values = {"loss": loss_value}
                values |= {k: v / dist.world for k, v in zip(logged, sums, strict=True)}
                if not math.isfinite(loss_value):
                    raise non_finite("loss", loss_value, state.step, lr, run)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
                if not math.isfinite(float(grad_norm)):
                    raise non_finite("gradient norm", float(grad_norm), state.step, lr, run)
                optimizer.step()

                state.step += 1
                state.epoch_step += 1
                state.position.advance(batch, data.streams)
                tokens = int(batch.lengths.sum()) * dist.world  # about: ranks see similar rows
                meter.train(state.step, state.epoch, lr, values, int(sentences), tokens)
                if (
                    cadence.eval_every
                    and state.step % cadence.eval_every == 0
                    and state.step < total
                ):
                    with meter.paused():
                        meter.val(state.step, state.epoch, held_out(model))
                if (
                    cadence.checkpoint_every
                    and state.step % cadence.checkpoint_every == 0
                    and state.step < total
                ):
                    with meter.paused():
                        weights = net.weights()
                        save_state(
                            run.checkpoints, weights, optimizer, state, run.fingerprint, dist
                        )
            if state.step < total:
                state = TrainState(state.step, state.epoch + 1, 0, DataPosition([0] * data.streams))
        with meter.paused():
            meter.val(state.step, state.epoch, held_out(model))

    # -- finish ------------------------------------------------------------------------------
    if dist.rank == 0:
        model.to("cpu").eval()
        StudentEncoder(student_cfg, model, tokenizer=tokenizer).save_pretrained(cfg.out)
        run.finish(summary=meter.summary(state.step, state.epoch))
    dist.barrier()
    say(f"{cfg.out}: student saved ({state.step:,} steps, {meter.summary_line()})")
    return cfg.out


# =============================================================================== the pieces


class TrainingNet(torch.nn.Module):
    """The student and its objectives' training-only heads as one module, so that DDP and the
    checkpoints see them all. ``forward`` gives the sentence vectors and the side outputs the
    objectives' losses need."""

    def __init__(self, student: BiLSTMEncoder, objectives: Objectives) -> None:
        super().__init__()
        self.student = student
        for name, head in objectives.heads.items():
            self.add_module(name, head)  # checkpoint keys `lm.*`, `rf.*`
        self.has_heads = bool(objectives.heads)
        self.objectives = list(objectives.items)  # plain objects, not modules

    def forward(
        self, input_ids: torch.Tensor, lengths: torch.Tensor, prepared: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # An objective that needs the student's insides runs it (at most one does); else the
        # student runs as it will after training.
        for o in self.objectives:
            out = o.run(self.student, o.head, input_ids, lengths, prepared[o.name])
            if out is not None:
                return out
        return self.student(input_ids, lengths), {}

    def weights(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: without heads, the student's own keys (as checkpoints
        always had); with them, ``student.*`` beside each head's."""
        return dict((self if self.has_heads else self.student).state_dict())

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        (self if self.has_heads else self.student).load_state_dict(weights, strict=True)


def adamw(net: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # Weight decay on matrices only; biases are offsets, decaying them only hurts.
    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        # The fused kernel is ~7x faster than the default on CPU, where the optimiser step
        # over the 9M-entry embedding table is otherwise a fifth of the training step.
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def non_finite(what: str, value: float, step: int, lr: float, run: RunFolder) -> SraError:
    last = run.checkpoints.latest_step()
    kept = f"the last good checkpoint (step {last:,}) is kept" if last else "no checkpoint yet"
    return SraError(
        f"non-finite {what} ({value}) at step {step + 1:,} (lr {lr:.2e}); stopped, {kept}; "
        "lower --lr or try --no-bf16 and rerun with --overwrite"
    )
