"""random: r random merges per block, seeded: the control for every selection rule.

Ours (no paper): per block and clip, a uniformly random permutation of the T mergeable tokens
puts r of them in A and the rest in B; every A token joins a uniformly random B token (several
may share one); the groups are combined by ToMe's size-weighted average (Bolya et al. 2023,
§3), so exactly r tokens go and sizes, sources and proportional attention work as in ToMe.

The draw depends only on (seed, block, T, r), never on the batch or on what else is packed in a
row: a clip is merged alike alone or packed, on any device, and the same seed gives the same
merges every run. (It is the same draw in every training step too.)
"""

from __future__ import annotations

import hashlib
import random

import torch

from fastast_cli.models.reduction.matching import ReductionStep, Regrouping, regroup


def random_pattern(seed: int, block: int, count: int, remove: int) -> torch.Tensor:
    """The partner [count] of every mergeable token (itself when it stays) for one clip of
    `count` mergeable tokens losing `remove` of them, drawn from (seed, block, count, remove).

    Python's own generator (not torch's), so the draw is a constant when the model is traced
    for export, and the same on every device.
    """
    key = hashlib.blake2b(f"{seed}:{block}:{count}:{remove}".encode(), digest_size=8).digest()
    generator = random.Random(int.from_bytes(key, "little"))
    order = generator.sample(range(count), count)
    set_a, set_b = order[:remove], order[remove:]
    partner = list(range(count))
    for token in set_a:
        partner[token] = set_b[generator.randrange(len(set_b))]
    return torch.tensor(partner)


class RandomMerge:
    """r seeded random merges per block and clip (the control)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._patterns: dict[tuple[int, int, int], torch.Tensor] = {}

    @property
    def options(self) -> dict[str, int]:
        """What `make_method` needs to rebuild this method (checkpoints, recipes)."""
        return {"seed": self.seed}

    def pattern(self, block: int, count: int, remove: int) -> torch.Tensor:
        """Cached `random_pattern` of this method's seed."""
        key = (block, count, remove)
        if key not in self._patterns:
            self._patterns[key] = random_pattern(self.seed, block, count, remove)
        return self._patterns[key]

    def clip_partner(self, block: int, count: int, remove: int, length: int) -> torch.Tensor:
        """A clip's partners padded to `length` entries (padding and a clip losing nothing:
        themselves)."""
        if not remove:
            return torch.arange(length)
        partner = self.pattern(block, count, remove)
        if count == length:
            return partner
        return torch.cat([partner, torch.arange(count, length)])

    def match(self, step: ReductionStep) -> Regrouping:
        view = step.clip_view()
        length = view.valid.shape[1]
        partner = view.per_clip(  # [K, T]; the draw depends only on the clip's shape
            lambda count, remove: self.clip_partner(step.block, count, remove, length))
        position = torch.arange(length, device=partner.device).expand_as(partner)
        return regroup(view, partner == position, partner)
