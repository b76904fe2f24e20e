"""Running stage one as several processes under torchrun: the rank helpers `embed()` calls.

Each rank embeds every `world`-th window into its own manifest; at the end the ranks meet and
rank 0 merges their manifests into one (`cache/writer.py::merge_rank_manifests`). These
helpers are separate from `pipeline/embedding.py` because they are about processes, not
embedding: reading the rank from the environment, the gloo process group, the barriers and
the vote that keep the ranks in step, and dying with a killed launcher. torch is imported
inside each function, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

from cache import Manifest, merge_rank_manifests
from cache.errors import SraError
from pipeline.reader import die_with_parent


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local world size) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if world < 1 or not 0 <= rank < world:
        raise SraError(f"bad RANK={rank} / WORLD_SIZE={world} in the environment")
    return rank, world, local


def watch_launcher() -> int | None:
    """Under torchrun: die with the launcher (a killed torchrun must not leave workers running).
    Returns the launcher's pid, checked again between windows where the kernel cannot help."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None  # RANK/WORLD_SIZE set by hand: the parent is a shell, not a launcher
    die_with_parent()
    return os.getppid()


def init_process_group() -> None:
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def merge_when_all_done(out: Path, rank: int, world: int) -> Manifest:
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        merge_rank_manifests(out, world)
    dist.barrier()
    from cache import open_cache

    manifest = open_cache(out).manifest
    dist.destroy_process_group()
    return manifest
