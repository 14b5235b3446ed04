"""Reproducible batches: the order of an epoch and the augmentation of each item are pure
functions of (seed, epoch, index), whatever the worker count, the rank, or an interruption.

That is what lets `--resume` continue a run exactly, mid-epoch included, and what keeps DDP
ranks drawing disjoint, reproducible shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.data import Dataset, Sampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item of one epoch (SplitMix64-style mixing of the three)."""
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index) & (2**64 - 1)
    value ^= value >> 31
    value = (value * 0x94D049BB133111EB) & (2**64 - 1)
    return (value ^ (value >> 29)) >> 1


# Replayed views (teacher_views: K) draw from their own seed stream, apart from the epochs'.
VIEW_STREAM = 0x5EED_0F_7EAC


def view_seed(seed: int, view: int, index: int) -> int:
    """The seed of augmented view `view` of clip `index`: its augmentation, whenever drawn."""
    return item_seed(seed ^ VIEW_STREAM, view, index)


# A training step's own draws (ElasticAST's token dropout) come from a third stream.
STEP_STREAM = 0x57E9_D0_0D


def seed_step(seed: int, step: int, rank: int, device: torch.device) -> None:
    """Seed the random draws of training step `step` on rank `rank` (what the model's forward
    draws: ElasticAST's token dropout): a pure function of the three, so a resumed run draws
    what the uninterrupted one did, and torchrun's ranks draw apart. The CPU generator, and on
    CUDA the current device's."""
    value = item_seed(seed ^ STEP_STREAM, step, rank)
    torch.default_generator.manual_seed(value)
    if device.type == "cuda":  # the training's device, not the current one (cuda:N alone)
        index = torch.cuda.current_device() if device.index is None else device.index
        torch.cuda.default_generators[index].manual_seed(value)


def replayed_view(seed: int, epoch: int, index: int, views: int) -> int:
    """Which of the `views` stored views of clip `index` epoch `epoch` replays."""
    return item_seed(seed, epoch, index) % views


@contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded to `seed`, then restore its state.

    Only the CPU generator: `torch.manual_seed` would also reseed every CUDA device (on a GPU,
    each item would reset the training's dropout stream) and, before CUDA is initialized,
    records a stack trace per call (~0.3 ms, once per item).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class SeededItems(Dataset):
    """Wraps a dataset so item i of epoch e always draws the same augmentation.

    Returns `(*dataset[i], i, view)` (`training.batch.collate_batch` makes B of them one
    `Batch`): the index lets the loop find cached teacher logits. With `views` = K > 0 an item
    is one of K fixed augmented views of its clip (`view`, drawn per epoch and clip; the
    augmentation is the one `view_seed` gives), else `view` is -1.
    """

    def __init__(self, dataset: Dataset, seed: int, views: int = 0) -> None:
        self.dataset, self.seed, self.epoch, self.views = dataset, seed, 0, views

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        if self.views:
            view = replayed_view(self.seed, self.epoch, index, self.views)
            return (*view_item(self.dataset, self.seed, view, index), index, view)
        with seeded_cpu_rng(item_seed(self.seed, self.epoch, index)):
            return (*self.dataset[index], index, -1)


def view_item(dataset: Dataset, seed: int, view: int, index: int) -> tuple:
    """Item `index` of `dataset` augmented as its view `view`: the same every time."""
    with seeded_cpu_rng(view_seed(seed, view, index)):
        return dataset[index]


class EpochSampler(Sampler[int]):
    """A shuffled order per epoch, split across `world` ranks, optionally skipping a prefix.

    Like DistributedSampler, the order is padded (with its own first items) to a multiple of
    `world` so every rank takes the same number of steps. `set_epoch(epoch, start)` picks the
    epoch and the number of this rank's items already consumed (for a mid-epoch resume).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def rank_order(self) -> list[int]:
        """This rank's items for the whole epoch, in order."""
        generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.size, generator=generator).tolist()
        per_rank = -(-self.size // self.world)
        repeats = -(-per_rank * self.world // self.size)  # more ranks than items: wrap around
        order = (order * repeats)[: per_rank * self.world]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_order()[self.start :])

    def __len__(self) -> int:
        return max(-(-self.size // self.world) - self.start, 0)  # 0 once the epoch is done
