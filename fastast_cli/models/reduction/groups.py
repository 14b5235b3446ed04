"""Per-clip views and regroupings shared by the methods that are not ToMe's bipartite matching.

PiToMe, EViT and random decide per clip which mergeable tokens stay and which join another. A
`ClipView` lays the mergeable tokens (all but CLS and DIST) of every clip out as padded rows
[K, T] (K clips, T the longest clip's mergeable tokens; dense: K = B rows, no padding), so one
batched computation serves both layouts and never mixes clips. A method answers with `keep`
[K, T] (the token stays) and `partner` [K, T] (the mergeable index of the staying token each
token joins; itself when it stays); `ClipView.regroup` turns that into a `Regrouping`, which
applies to any per-token tensor of the layout (values, sizes, sources) and combines each group
by its size-weighted average, or weighted by per-token `weights` (EViT's attention).

Staying tokens keep their position order within the clip; a group sits where its staying token
sat. Token order never changes a logit (attention is permutation-equivariant once the positions
are added).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastast_cli.models.packing import Layout
from fastast_cli.models.reduction.base import ReductionStep, merge_tokens


@dataclass
class ClipView:
    """The mergeable tokens of every clip as padded rows [K, T].

    removed, r: tokens each clip loses, as ints and as a tensor [K]. valid: [K, T] real (not
    padding) entries. index: [K, T] flat token index of each entry (packed only; 0 at
    padding). row, slot: [K] attention row of each clip and [K, T] slot of each entry in it;
    prefix_slot: [K, P] slots of its CLS and DIST.
    """

    protected: int
    removed: list[int]
    r: torch.Tensor
    valid: torch.Tensor
    row: torch.Tensor
    slot: torch.Tensor
    prefix_slot: torch.Tensor
    layout: Layout | None = None
    index: torch.Tensor | None = None
    length: int = 0  # dense: tokens per row (N)

    @classmethod
    def of(cls, step: ReductionStep) -> ClipView:
        """The view of a block's tokens, dense rows or packed clips."""
        protected, device = step.protected, step.tokens.device
        leading = torch.arange(protected, device=device)
        if not step.is_packed:
            batch, length = step.tokens.shape[:2]
            position = torch.arange(protected, length, device=device).expand(batch, -1)
            r = torch.full((batch,), step.r[0], device=device, dtype=torch.long)
            everywhere = torch.ones_like(position, dtype=torch.bool)
            return cls(protected, list(step.r) * batch, r, everywhere,
                       torch.arange(batch, device=device), position,
                       leading.expand(batch, -1), length=length)
        layout = step.state.layout
        mergeable = (layout.count_tensor - protected).clamp_min(0)  # [K]
        within = torch.arange(max(int(mergeable.max()), 1), device=device)  # [T]
        valid = within < mergeable[:, None]  # [K, T]
        index = torch.where(valid, layout.starts[:, None] + protected + within, 0)
        offsets = torch.tensor(layout.offsets, device=device)
        slot = torch.where(valid, offsets[:, None] + protected + within, 0)
        r = torch.tensor(step.r, device=device, dtype=torch.long)
        rows = torch.tensor(layout.rows, device=device)
        return cls(protected, list(step.r), r, valid, rows, slot, offsets[:, None] + leading,
                   layout, index)

    @property
    def counts(self) -> torch.Tensor:
        """[K] mergeable tokens of each clip."""
        return self.valid.sum(dim=1)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token values (dense [B, N, C], packed flat [N, C]) → [K, T, C]."""
        if self.index is None:
            return values[:, self.protected :]
        return values[self.index]

    def scatter(self, values: torch.Tensor, prefix: float) -> torch.Tensor:
        """[K, T] per-entry values → per token (dense [B, N, 1], packed [N, 1]); CLS and DIST
        get `prefix`."""
        if self.index is None:
            ahead = values.new_full((values.shape[0], self.protected), prefix)
            return torch.cat([ahead, values], dim=1)[..., None]
        flat = values.new_full((self.layout.num_tokens,), prefix)
        return flat.index_put((self.index[self.valid],), values[self.valid])[:, None]

    def rank(self, score: torch.Tensor) -> torch.Tensor:
        """[K, T] rank of every entry in its clip by descending `score` (ties: earlier first;
        padding last)."""
        score = score.masked_fill(~self.valid, float("-inf"))
        order = score.argsort(dim=1, descending=True, stable=True)
        within = torch.arange(score.shape[1], device=score.device).expand_as(order)
        return torch.empty_like(order).scatter_(1, order, within)

    def regroup(
        self, keep: torch.Tensor, partner: torch.Tensor, weights: torch.Tensor | None = None
    ) -> Regrouping:
        """The regrouping where `keep` [K, T] tokens stay and the others join `partner` [K, T].

        weights: [K, T] per-entry combine weights (None: the tokens' sizes).
        """
        keep = keep & self.valid
        rank = keep.long().cumsum(dim=1) - 1  # new position of each staying entry
        moved = rank.gather(1, partner) + self.protected  # [K, T] new position in the clip
        token_weights = None if weights is None else self.scatter(weights, 1.0)
        if self.index is None:
            batch = keep.shape[0]
            leading = torch.arange(self.protected, device=keep.device).expand(batch, -1)
            destination = torch.cat([leading, moved], dim=1)  # [B, N]
            return Regrouping(destination, self.length - self.removed[0], None, token_weights)
        layout = self.layout.resized(
            [n - r for n, r in zip(self.layout.counts, self.removed, strict=True)])
        starts = layout.starts
        old = self.layout
        destination = starts[old.token_clip] + old.token_position  # right for CLS and DIST
        destination[self.index[self.valid]] = (starts[:, None] + moved)[self.valid]
        return Regrouping(destination, layout.num_tokens, layout, token_weights)


@dataclass
class Regrouping:
    """Tokens joined into groups; applies to any per-token tensor of the layout.

    destination: new position of every token (dense [B, N] within the row, packed [N] flat).
    size: tokens after the regrouping (dense per row, packed in all). layout: the packed
    layout after it (None for dense rows). weights: per-token combine weights (dense [B, N, 1],
    packed [N, 1]), or None for the size-weighted average.
    """

    destination: torch.Tensor
    size: int
    layout: Layout | None
    weights: torch.Tensor | None = None

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Combine `values` (dense [B, N, C], packed [N, C]) per group with `reduce`."""
        channels = values.shape[-1]
        if self.layout is None:
            out = values.new_zeros(values.shape[0], self.size, channels)
            where = self.destination[..., None].expand(-1, -1, channels)
            return out.scatter_reduce(1, where, values, reduce, include_self=False)
        out = values.new_zeros(self.size, channels)
        where = self.destination[:, None].expand(-1, channels)
        return out.scatter_reduce(0, where, values, reduce, include_self=False)

    def combine(
        self, tokens: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group → its weighted mean (`weights`, else sizes); sizes add up."""
        if self.weights is None:
            return merge_tokens(self, tokens, sizes)
        weights = self.weights.float()  # attention weights can underflow in half precision
        total = self.merge(weights).clamp_min(1e-12)
        fused = self.merge(tokens.float() * weights) / total
        return fused.to(tokens.dtype), self.merge(sizes)
