"""Multi-GPU / multi-node runs through PyTorch's own DDP, as set up by `torchrun`: training,
validation, `evaluate` and `predict`.

`torchrun --nproc_per_node N -m fastast_cli distill ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
without them training runs in one process. NCCL on GPUs, gloo on CPUs. Evaluation (validation,
`evaluate`, `predict`) splits its items into one contiguous shard per rank and gathers the
results in rank order, so every rank ends with the whole, in the items' order.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


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
        return float(_all_reduce(value, torch.float64, dist.ReduceOp.SUM)) / self.world

    def max(self, value: int) -> int:
        """The largest of an integer over all ranks (a flag any rank raised, a signal number)."""
        if not self.active:
            return value
        return int(_all_reduce(value, torch.int64, dist.ReduceOp.MAX))

    def share_buffers(self, model: nn.Module) -> None:
        """Every rank takes rank 0's buffers. DDP sends them before each training forward, but
        the forward then updates BatchNorm's running statistics from each rank's own batch:
        after an epoch's last step the ranks' models differ, and each would validate its shard
        with a model rank 0 never saves."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def shard(self, size: int) -> range:
        """This rank's contiguous block of `size` items (blocks differ by at most one item and
        follow each other in rank order; all of them in one process)."""
        return range(size * self.rank // self.world, size * (self.rank + 1) // self.world)

    def gather(self, value: T) -> list[T]:
        """`value` of every rank, in rank order (any picklable value; [value] in one process)."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def gather_shards(self, items: Sequence[T]) -> list[T]:
        """The items of every rank's shard, concatenated in rank order."""
        return [item for part in self.gather(list(items)) for item in part]


def _all_reduce(value: float, dtype: torch.dtype, op: dist.ReduceOp) -> float:
    """One number reduced over the process group (on the GPU under NCCL, which reduces only
    device tensors)."""
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=dtype, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.item()


def unused_parameters(model: nn.Module, example: Any) -> list[str]:
    """Names of the trainable parameters that a training-mode forward of `example` and a
    backward leave without a gradient (a MobileNetV3 backbone's `conv_head`, which its
    `forward_features` skips; PaSST's distillation head). DDP waits for every parameter's
    gradient unless told to look for unused ones, and fails at the second step.

    Runs on a copy of the model, with the random state restored: the model itself, its
    BatchNorm statistics and the run's random draws are untouched.
    """
    probe = copy.deepcopy(model).train()
    device = next(probe.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        output = probe(example)
        output = output[0] if isinstance(output, tuple) else output
        output.float().sum().backward()
    return [name for name, parameter in probe.named_parameters()
            if parameter.requires_grad and parameter.grad is None]


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


def current_ranks() -> Ranks:
    """This process's place in the process group already joined (one process when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def close_ranks(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()
