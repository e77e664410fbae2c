"""Runs split across processes: each takes a shard of the units.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK) the processes render side by side, each on its own
GPU or on the CPU, meet at a barrier, and rank 0 assembles the grids. Under a SLURM job array
(SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) tasks run independently, and `fv merge OUT`
assembles them afterwards.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

from fvcli.errors import FvError

# Ranks meet once, after rendering; a rank with more units (or a slower GPU) may be hours behind.
BARRIER_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Launch:
    kind: str  # "torchrun" or "slurm"
    shard: tuple[int, int]  # (this process's index, the number of processes)
    local_rank: int = 0  # torchrun: the process's index on its machine, which picks its GPU


def _int(name: str, value: str) -> int:
    # ASCII digits only: int() would also take other scripts' digits, '_' and thousands of digits.
    if not re.fullmatch(r"\s*[+-]?[0-9]{1,9}\s*", value):
        raise FvError(f"environment variable {name}={value!r} is not a number")
    return int(value)


def from_environment(environ=os.environ) -> Launch | None:
    """The launcher this process runs under, if any, and its shard of the units."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        rank, world = _int("RANK", environ["RANK"]), _int("WORLD_SIZE", environ["WORLD_SIZE"])
        if not 0 <= rank < world:
            raise FvError(f"torchrun rank {rank} is outside the world of {world} processes")
        local = _int("LOCAL_RANK", environ.get("LOCAL_RANK", "0"))
        return Launch("torchrun", (rank, world), local) if world > 1 else None
    if "SLURM_ARRAY_TASK_ID" in environ:
        if "SLURM_ARRAY_TASK_COUNT" not in environ:
            raise FvError("SLURM_ARRAY_TASK_ID is set, but SLURM_ARRAY_TASK_COUNT is missing; pass --shard I/N")
        task = _int("SLURM_ARRAY_TASK_ID", environ["SLURM_ARRAY_TASK_ID"])
        task -= _int("SLURM_ARRAY_TASK_MIN", environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        count = _int("SLURM_ARRAY_TASK_COUNT", environ["SLURM_ARRAY_TASK_COUNT"])
        if not 0 <= task < count:
            raise FvError(f"SLURM array task {task} is outside the array's {count} tasks; pass --shard I/N")
        return Launch("slurm", (task, count))
    return None


def rank_device(requested: str, local_rank: int) -> str:
    """Under torchrun, `auto` and `cuda` mean this rank's own GPU (LOCAL_RANK), when there are GPUs."""
    import torch

    from fvcli.run.devices import auto_device

    if requested == "auto":
        requested = auto_device()
    if requested == "cuda" and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return requested


class ProcessGroup:
    """torch.distributed over gloo, used only to meet: a barrier and the worst exit status.
    (gloo works on every device; the ranks exchange no tensors worth NCCL.)"""

    def __enter__(self) -> ProcessGroup:
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
        self.dist = dist
        return self

    def worst(self, code: int) -> int:
        """The largest exit status over all ranks (waits for every rank)."""
        import torch

        value = torch.tensor([code])
        self.dist.all_reduce(value, op=self.dist.ReduceOp.MAX)
        return int(value.item())

    def barrier(self) -> None:
        self.dist.barrier()

    def __exit__(self, *exc) -> None:
        self.dist.destroy_process_group()
