"""Multi-GPU / multi-node training through PyTorch's own DDP, as set up by `torchrun`.

`torchrun --nproc_per_node N -m fastast_cli distill ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
without them training runs in one process. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, preferred: torch.device) -> torch.device:
        """Under DDP on GPUs each process takes the GPU of its local rank."""
        if self.active and preferred.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return preferred

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a number over all ranks."""
        if not self.active:
            return value
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world


def init_ranks(device: torch.device) -> Ranks:
    """Join the process group that torchrun describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks


def close_ranks(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()
