"""Checkpoints: atomic, safetensors + JSON only, and the last complete one always kept.

A run folder holds ``checkpoint/`` while it trains::

    checkpoint/latest.json            {"dir": "step-000000021"}: the last complete checkpoint
    checkpoint/step-000000021/        *.safetensors and state.json (written last)

A checkpoint is written into a temporary folder, flushed, and renamed into place; only then
does ``latest.json`` point at it and the older one go. A kill at any moment leaves the last
complete checkpoint; a full disk leaves it too, removes the partial one, and says so in one
line. Nothing is ever pickled: tensors go to safetensors, everything else to JSON, so loading
a checkpoint runs no code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache.errors import SraError
from cache.files import fsync_dir, write_atomic, write_file

if TYPE_CHECKING:
    import torch

CHECKPOINT_DIR = "checkpoint"
LATEST_FILE = "latest.json"
STATE_FILE = "state.json"


class Checkpoints:
    """The checkpoints of one run folder (``RUN/checkpoint/``)."""

    def __init__(self, run: Path) -> None:
        self.folder = run / CHECKPOINT_DIR

    def latest(self) -> Path | None:
        """The last complete checkpoint folder, if any."""
        try:
            name = str(json.loads((self.folder / LATEST_FILE).read_text())["dir"])
        except (OSError, ValueError, KeyError, TypeError):
            # The one-folder layout fine-tuning wrote before numbered checkpoints.
            return self.folder if (self.folder / STATE_FILE).is_file() else None
        path = self.folder / name
        return path if "/" not in name and (path / STATE_FILE).is_file() else None

    def latest_step(self) -> int:
        latest = self.latest()
        return 0 if latest is None else int(read_state(latest).get("step", 0))

    def save(self, step: int, files: dict[str, bytes]) -> Path:
        """Write ``files`` (``state.json`` among them) as the checkpoint of ``step``.

        On an OS error (a full disk, most likely) the partial folder is removed and one line
        says where, that the previous checkpoint is intact, and that a rerun resumes from it.
        """
        if STATE_FILE not in files:
            raise ValueError(f"a checkpoint needs a {STATE_FILE}")
        name = f"step-{step:09d}"
        tmp = self.folder / f".{name}.tmp-{os.getpid()}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            # state.json last: its presence marks a whole folder.
            for fname in sorted(files, key=lambda n: n == STATE_FILE):
                write_file(tmp / fname, files[fname])
            fsync_dir(tmp)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            kept = (
                f"the previous checkpoint {previous} is intact"
                if previous is not None
                else "there is no earlier checkpoint"
            )
            raise SraError(
                f"cannot write checkpoint {self.folder / name} ({e.strerror or e}); {kept}; "
                "free some space and rerun the same command to resume"
            ) from e
        return self.commit(tmp, name)

    def commit(self, tmp: Path, name: str) -> Path:
        """Rename a fully written folder into place, point latest.json at it, drop the rest."""
        final = self.folder / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(self.folder)
        write_atomic(self.folder / LATEST_FILE, json_bytes({"dir": name}))
        for p in self.folder.iterdir():
            if p.name not in (name, LATEST_FILE):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        return final

    def remove(self) -> None:
        """The run is finished: its outputs are saved, the optimiser state is not needed."""
        shutil.rmtree(self.folder, ignore_errors=True)


def read_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's state.json; unreadable is one line naming the folder."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise unreadable(folder, e) from None
    if not isinstance(state, dict):
        raise SraError(f"checkpoint {folder} has no valid {STATE_FILE}; pass --overwrite")
    return state


def read_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    import safetensors.torch

    try:
        return safetensors.torch.load_file(str(folder / name))
    except Exception as e:
        raise unreadable(folder, e) from None


def unreadable(folder: Path, error: BaseException) -> SraError:
    first = " ".join(str(error).split())[:200] or type(error).__name__
    return SraError(f"checkpoint {folder} is unreadable ({first}); pass --overwrite to start over")


def tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """A safetensors file of CPU copies of ``tensors``."""
    import safetensors.torch

    return safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def optimizer_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser's state into safetensors tensors and JSON, so no pickle is needed."""
    import torch

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
