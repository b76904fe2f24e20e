"""Where a training run stands, saved and restored exactly: the checkpoints of `pipeline train`.

A checkpoint holds the weights (the student, and the heads of side objectives), the optimiser's
moments, every rank's RNG state and data position, and the step. Resuming from it ends with the
same weights as a run that was never interrupted. The folder layout and the atomic writing are
``student.runs.checkpoint``'s; this module decides what goes in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cache.errors import SraError
from student.runs.checkpoint import (
    Checkpoints,
    json_bytes,
    optimizer_files,
    optimizer_state,
    read_state,
    read_tensors,
    tensors_bytes,
    unreadable,
)
from student.training.data import DataPosition
from student.training.dist import Dist

CHECKPOINT_FORMAT = "sra-train-checkpoint"


@dataclass
class TrainState:
    step: int  # optimiser steps taken
    epoch: int
    epoch_step: int  # steps taken in this epoch
    position: DataPosition  # this rank's place in the epoch's batches

    @classmethod
    def start(cls, streams: int) -> TrainState:
        return cls(0, 0, 0, DataPosition([0] * streams))


def save_state(
    checkpoints: Checkpoints,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    fingerprint: str,
    dist: Dist,
) -> None:
    """Checkpoint ``state`` (every rank calls; each rank's RNG and position are gathered, and
    rank 0 alone writes)."""
    rng = {f"torch.rank{r}": t for r, t in enumerate(dist.gather(torch.get_rng_state()))}
    if dist.device.type == "cuda":
        cuda = dist.gather(torch.cuda.get_rng_state(dist.device))
        rng |= {f"cuda.rank{r}": t for r, t in enumerate(cuda)}
    streams = len(state.position.consumed)
    pos = torch.tensor([*state.position.consumed, state.position.next_stream], dtype=torch.int64)
    positions = [p.tolist() for p in dist.gather(pos)]
    if dist.rank != 0:
        return
    opt_tensors, opt_meta = optimizer_files(optimizer)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "fingerprint": fingerprint,
        "step": state.step,
        "epoch": state.epoch,
        "epoch_step": state.epoch_step,
        "data": [{"consumed": p[:streams], "next_stream": p[streams]} for p in positions],
        "optimizer": opt_meta,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    files = {
        "model.safetensors": tensors_bytes(weights),
        "optimizer.safetensors": tensors_bytes(opt_tensors),
        "rng.safetensors": tensors_bytes(rng),
        "state.json": json_bytes(meta),
    }
    checkpoints.save(state.step, files)


def load_state(
    folder: Path,
    load_weights: Callable[[dict[str, torch.Tensor]], object],
    optimizer: torch.optim.Optimizer,
    dist: Dist,
) -> TrainState:
    """Restore the weights (through ``load_weights``), optimiser and this rank's RNG from a
    checkpoint folder; returns where the run stood."""
    meta = read_state(folder)
    try:
        load_weights(read_tensors(folder, "model.safetensors"))
        opt = read_tensors(folder, "optimizer.safetensors")
        optimizer.load_state_dict(optimizer_state(opt, meta["optimizer"], dist.device))
        rng = read_tensors(folder, "rng.safetensors")
        torch.set_rng_state(rng[f"torch.rank{dist.rank}"])
        if dist.device.type == "cuda" and f"cuda.rank{dist.rank}" in rng:
            torch.cuda.set_rng_state(rng[f"cuda.rank{dist.rank}"], dist.device)
        data = meta["data"][dist.rank]
        position = DataPosition(list(data["consumed"]), int(data["next_stream"]))
        return TrainState(int(meta["step"]), int(meta["epoch"]), int(meta["epoch_step"]), position)
    except SraError:
        raise
    except (ValueError, KeyError, IndexError, RuntimeError, TypeError) as e:
        raise unreadable(folder, e) from None
