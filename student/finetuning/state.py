"""Where fine-tuning stands, saved after every epoch: the weights, the best epoch's weights,
both optimisers and the RNG. A rerun of a killed run continues after the last finished epoch
and ends as an uninterrupted run would (``student.runs`` writes the checkpoint atomically)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cache.errors import SraError
from student.finetuning.head import FinetuneModel
from student.finetuning.optim import DenseAndSparse
from student.runs.checkpoint import (
    json_bytes,
    optimizer_files,
    optimizer_state,
    read_state,
    read_tensors,
    tensors_bytes,
    unreadable,
)
from student.runs.folder import RunFolder


@dataclass
class EpochState:
    """Where fine-tuning stands: saved after every epoch."""

    epoch: int = 0  # epochs finished
    step: int = 0
    best: float | None = None
    best_epoch: int = 0
    stale: int = 0  # epochs since the best
    best_weights: dict[str, torch.Tensor] | None = None


def save_checkpoint(
    run: RunFolder, model: FinetuneModel, optimizer: DenseAndSparse, state: EpochState
) -> None:
    saved = [optimizer_files(o) for o in optimizer.all]
    info = {k: v for k, v in asdict(state).items() if k != "best_weights"}
    meta = {**info, "fingerprint": run.fingerprint, "optimizers": [m for _, m in saved]}
    files = {
        "model.safetensors": tensors_bytes(model.state_dict()),
        "best.safetensors": tensors_bytes(state.best_weights or {}),
        **{f"optimizer{i}.safetensors": tensors_bytes(t) for i, (t, _) in enumerate(saved)},
        "rng.safetensors": tensors_bytes({"torch": torch.get_rng_state()}),
        "state.json": json_bytes(meta),
    }
    run.checkpoints.save(state.step, files)


def load_checkpoint(
    folder: Path, model: FinetuneModel, optimizer: DenseAndSparse, device: torch.device
) -> EpochState:
    info = read_state(folder)
    try:
        model.load_state_dict(read_tensors(folder, "model.safetensors"))
        best = read_tensors(folder, "best.safetensors")
        for i, (o, meta) in enumerate(zip(optimizer.all, info.pop("optimizers"), strict=True)):
            o.load_state_dict(
                optimizer_state(read_tensors(folder, f"optimizer{i}.safetensors"), meta, device)
            )
        torch.set_rng_state(read_tensors(folder, "rng.safetensors")["torch"])
        info.pop("fingerprint", None)
        return EpochState(**info, best_weights=best or None)
    except SraError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise unreadable(folder, e) from None
