"""The run folder and its checkpoints: refuse a different run, resume the same one exactly.

A run folder holds ``run.json`` (the config and its fingerprint), ``metrics.jsonl``,
``checkpoint/`` while training, and finally the student (``config.json``,
``model.safetensors``, ``tokenizer.json``). Checkpoints are safetensors + JSON only, written
to a temporary folder and renamed into place, so a kill at any moment leaves the last complete
one; resuming from it ends with the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from cache.errors import SraError
from cache.files import fsync_dir, write_atomic, write_file
from student.data import DataPosition
from student.dist import Dist

RUN_FORMAT = "sra-train-run"
CHECKPOINT_FORMAT = "sra-train-checkpoint"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
LATEST_FILE = "latest.json"
# What --overwrite may delete in a run folder: our own files, never anything else.
RUN_FILES = (
    RUN_FILE,
    METRICS_FILE,
    CHECKPOINT_DIR,
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "report.md",
    "loss.png",
    "fidelity.png",
)


class RunDir:
    """The output folder: refuses foreign or different runs, resumes the same one."""

    COMPLETE = object()  # prepare(): the run is already finished

    def __init__(self, path: Path, dist: Dist) -> None:
        self.path = path
        self.dist = dist
        self.ckpt = path / CHECKPOINT_DIR

    def prepare(
        self,
        fingerprint: str,
        identity: dict[str, Any],
        *,
        cache: Path,
        options: dict[str, Any],
        resume: bool,
        overwrite: bool,
    ) -> Any:
        """Check the folder against this config; returns the checkpoint folder to resume
        from, None to start fresh, or COMPLETE. Every rank checks; only rank 0 writes.

        ``identity`` decides the weights (``fingerprint`` is its hash); ``options`` is every
        option as given, kept in run.json for the record."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise SraError(f"--out {path} is a file; choose a folder")
        existing = self._read_run()
        foreign = existing is None and path.exists() and any(path.iterdir())
        self.dist.barrier()  # every rank has looked before rank 0 changes anything
        if foreign:
            raise SraError(
                f"--out {path} is not empty and holds no {RUN_FILE}, so it is not a training "
                "run; choose a new or empty folder"
            )
        if existing is not None and existing.get("fingerprint") != fingerprint:
            changed = _changed_keys(existing.get("config", {}), identity)
            what = ", ".join(changed[:6]) or "fingerprint"
            if overwrite:
                self._clear()
                existing = None
            elif resume:
                raise SraError(
                    f"cannot --resume {path}: its checkpoint is from a different config "
                    f"(differs in: {what}); rerun with the original options, or --overwrite "
                    "to start over"
                )
            else:
                raise SraError(
                    f"{path} holds a different run (differs in: {what}); pass --overwrite to "
                    "replace it or choose another --out"
                )
        if existing is not None and overwrite:
            self._clear()
            existing = None
        if existing is not None:
            finished = existing.get("status") == "complete"
            if not resume:
                state = "finished" if finished else "unfinished"
                hint = "" if finished else "--resume to continue it or "
                raise SraError(
                    f"{path} already holds {'a' if finished else 'an'} {state} run with this "
                    f"config; pass {hint}"
                    "--overwrite to train it again"
                )
            if finished:
                return self.COMPLETE
            checkpoint = self.latest()
            if checkpoint is not None:
                state = json.loads((checkpoint / "state.json").read_text())
                if state.get("fingerprint") != fingerprint:
                    raise SraError(
                        f"cannot --resume: {checkpoint} belongs to a different config; "
                        "pass --overwrite to start over"
                    )
            elif self.dist.rank == 0:
                print(f"{path}: no checkpoint yet; starting from step 0", file=sys.stderr)
            self.dist.barrier()
            return checkpoint
        if self.dist.rank == 0:
            path.mkdir(parents=True, exist_ok=True)
            run = {
                "format": RUN_FORMAT,
                "format_version": 1,
                "fingerprint": fingerprint,
                "status": "training",
                "cache": str(cache.resolve()),
                "config": identity,
                "options": options,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_atomic(path / RUN_FILE, _json_bytes(run))
        self.dist.barrier()
        return None

    def _read_run(self) -> dict[str, Any] | None:
        p = self.path / RUN_FILE
        if not p.is_file():
            return None
        try:
            run = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise SraError(f"{p} is unreadable ({e}); pass --overwrite to start over") from None
        if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
            raise SraError(f"{p} is not a training-run file; choose another --out")
        return run

    def _clear(self) -> None:
        if self.dist.rank != 0:
            return
        for name in RUN_FILES:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The last committed checkpoint folder, if any."""
        try:
            name = json.loads((self.ckpt / LATEST_FILE).read_text())["dir"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        p = self.ckpt / str(name)
        return p if "/" not in str(name) and (p / "state.json").is_file() else None

    def latest_step(self) -> int:
        latest = self.latest()
        if latest is None:
            return 0
        return int(json.loads((latest / "state.json").read_text()).get("step", 0))

    def trim_metrics(self, step: int) -> None:
        """Drop metric lines past ``step``: a killed run logged steps the resume redoes."""
        p = self.path / METRICS_FILE
        if self.dist.rank != 0 or not p.exists():
            return
        kept = []
        for line in p.read_text().splitlines():
            with contextlib.suppress(ValueError):
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
        write_atomic(p, ("\n".join(kept) + "\n" if kept else "").encode())

    def finish(self, summary: dict[str, Any]) -> None:
        run = self._read_run() or {}
        run.update(
            status="complete",
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            summary=summary,
        )
        write_atomic(self.path / RUN_FILE, _json_bytes(run))
        # The student is saved; the optimiser state is no longer needed.
        shutil.rmtree(self.ckpt, ignore_errors=True)


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for k in sorted(set(old) | set(new)):
            keys += _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return keys
    return [] if old == new else [prefix.rstrip(".")]


@dataclass
class TrainState:
    step: int
    epoch: int
    epoch_step: int
    position: DataPosition


def save_checkpoint(
    run: RunDir,
    model: torch.nn.Module,  # the student, or StudentWithLM
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    fingerprint: str,
    dist: Dist,
) -> None:
    """Write RUN/checkpoint/step-N/ atomically, then point latest.json at it.

    Weights, optimiser moments and RNG states go to safetensors, everything else to JSON;
    loading never unpickles anything. Each rank's RNG state and data position are gathered so
    rank 0 alone writes.
    """
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
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    files = {
        "model.safetensors": safetensors.torch.save(weights),
        "optimizer.safetensors": safetensors.torch.save(opt_tensors),
        "rng.safetensors": safetensors.torch.save(rng),
        "state.json": _json_bytes(meta),  # written last: its presence marks a whole folder
    }
    name = f"step-{state.step:09d}"
    run.ckpt.mkdir(parents=True, exist_ok=True)
    tmp = run.ckpt / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for fname, data in files.items():
        write_file(tmp / fname, data)
    fsync_dir(tmp)
    _commit_checkpoint(run.ckpt, tmp, name)


def _commit_checkpoint(folder: Path, tmp: Path, name: str) -> None:
    """Rename the finished folder into place, repoint latest.json, drop older checkpoints."""
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(folder)
    write_atomic(folder / LATEST_FILE, _json_bytes({"dir": name}))
    for p in folder.iterdir():
        if p.name not in (name, LATEST_FILE):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, dist: Dist
) -> tuple[int, int, int, DataPosition]:
    """Restore weights, optimiser, this rank's RNG; return (step, epoch, epoch_step, position)."""
    try:
        meta = json.loads((folder / "state.json").read_text())
        weights = safetensors.torch.load_file(str(folder / "model.safetensors"))
        opt_tensors = safetensors.torch.load_file(str(folder / "optimizer.safetensors"))
        rng = safetensors.torch.load_file(str(folder / "rng.safetensors"))
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(optimizer_state(opt_tensors, meta["optimizer"], dist.device))
        torch.set_rng_state(rng[f"torch.rank{dist.rank}"])
        if dist.device.type == "cuda" and f"cuda.rank{dist.rank}" in rng:
            torch.cuda.set_rng_state(rng[f"cuda.rank{dist.rank}"], dist.device)
        data = meta["data"][dist.rank]
        position = DataPosition(list(data["consumed"]), int(data["next_stream"]))
        return int(meta["step"]), int(meta["epoch"]), int(meta["epoch_step"]), position
    except (OSError, ValueError, KeyError, IndexError, RuntimeError) as e:
        first = " ".join(str(e).split())[:200]
        raise SraError(
            f"checkpoint {folder} is unreadable ({first}); pass --overwrite to start over"
        ) from None


def optimizer_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser's state into safetensors tensors and JSON, so no pickle is needed."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_state(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """The inverse of ``optimizer_files``: a state dict ``load_state_dict`` accepts."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        # AdamW keeps `step` on the CPU unless capturable; the moments live with the weights.
        state.setdefault(int(pid), {})[name] = value if name == "step" else value.to(device)
    for key, value in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()
