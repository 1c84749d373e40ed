"""Multi-process training through torch.distributed, as launched by torchrun.

`sainet train` under `torchrun --nproc-per-node P` (or `sainet train --nproc P`) finds torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), joins the process group (NCCL when
the process has a GPU, gloo on CPU) and trains with DistributedDataParallel. Without that
environment it is one process and none of this runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather(self, value):
        """Rank 0: every rank's `value`, in rank order; the other ranks: None."""
        if not self.distributed:
            return [value]
        values = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, values, dst=0)
        return values

    def from_main(self, value):
        """Rank 0's `value`, on every rank (the others pass anything, e.g. None)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, values: list[float]) -> list[float]:
        """The element-wise mean of `values` over the ranks, on every rank (each rank holds as many:
        the ranks take the same steps)."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return (tensor / self.world_size).tolist()

    def total(self, value: float) -> float:
        """The sum of `value` over the ranks, on every rank."""
        if not self.distributed:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())


def default_device(local_rank: int = 0) -> torch.device:
    """The GPU of this process (one per process, as NCCL needs) when there are GPUs, else the CPU
    (hide the GPUs with CUDA_VISIBLE_DEVICES= to train on CPU with gloo)."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"process {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible): run at "
                         f"most one process per GPU, or on CPU with CUDA_VISIBLE_DEVICES=")
    return torch.device(f"cuda:{local_rank}")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current_processes() -> Processes:
    """The process group this process has joined, or one process on its default device."""
    if not dist.is_available() or not dist.is_initialized():
        return Processes(device=default_device())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return Processes(dist.get_rank(), dist.get_world_size(), default_device(local_rank))


@contextmanager
def process_group() -> Iterator[Processes]:
    """Joins torchrun's process group for the duration (a no-op outside torchrun)."""
    if not launched_by_torchrun() or dist.is_initialized():
        yield current_processes()
        return
    device = default_device(int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)      # NCCL's object collectives use the current device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield current_processes()
        # Every rank at the end before any tears its connections down: a gloo rank destroyed while
        # its peer still sent on them aborted the peer ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()
