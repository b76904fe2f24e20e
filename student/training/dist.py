"""Where this process stands in a training job: torchrun's ranks, or a job of one.

Everything the trainer needs from ``torch.distributed`` goes through ``Dist``, so the rest of
the code reads the same with one process or many; with one, no process group is ever started
and every collective is a local no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from cache.errors import SraError
from student.runtime import resolve_device


class Dist:
    """This process's place in a torchrun job (or a job of one), and the few collectives used."""

    def __init__(self, rank: int, world: int, local_rank: int, device: torch.device) -> None:
        self.rank = rank
        self.world = world
        self.local_rank = local_rank
        self.device = device

    @classmethod
    def start(cls, device: str) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        if world < 1 or not 0 <= rank < world:
            raise SraError(f"bad RANK={rank} / WORLD_SIZE={world} in the environment")
        use_cuda = resolve_device(device).type == "cuda"
        dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(dev)
        if world > 1:
            import datetime

            import torch.distributed as td

            if "OMP_NUM_THREADS" not in os.environ:
                # Ranks share the machine's cores; oversubscribed threads slow all of them.
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
            if not td.is_initialized():
                td.init_process_group(
                    "nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2)
                )
        return cls(rank, world, local_rank, dev)

    def stop(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _reduce(self, values: list[Any], op: str) -> list[float]:
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()) for v in values])
        if self.world > 1:
            import torch.distributed as td

            t = t.to(self.device)
            td.all_reduce(t, op=td.ReduceOp.SUM if op == "sum" else td.ReduceOp.MIN)
        return t.cpu().tolist()

    def sum(self, values: list[Any]) -> list[float]:
        return self._reduce([v.detach().cpu() if torch.is_tensor(v) else v for v in values], "sum")

    def min(self, value: float) -> float:
        return self._reduce([value], "min")[0]

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped tensor (CPU), in rank order."""
        if self.world == 1:
            return [tensor.cpu()]
        import torch.distributed as td

        t = tensor.to(self.device)
        parts = [torch.empty_like(t) for _ in range(self.world)]
        td.all_gather(parts, t)
        return [p.cpu() for p in parts]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()
