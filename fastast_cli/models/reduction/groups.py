"""Per-clip views and regroupings shared by the methods that are not ToMe's bipartite matching.

PiToMe, EViT and random decide per clip which mergeable tokens stay and which join another. A
`ClipView` lays the mergeable tokens (all but CLS and DIST) of every clip out as padded rows
[K, T] (K clips, T the longest clip's mergeable tokens; dense: K = B rows, no padding), so one
batched computation serves both layouts and never mixes clips. A method never builds one: it
asks the token state (`step.state.clip_view(...)`, which picks `of_rows` or `of_clips`), and
reads everything layout-dependent through the view: `gather` (tokens → [K, T, C]), `clip_rows`
(attention rows → the row of each clip), `per_clip` (a pattern made on the host per clip shape),
`rank` and `regroup`. A method answers with `keep` [K, T] (the token stays) and `partner` [K, T]
(the mergeable index of the staying token each token joins; itself when it stays);
`ClipView.regroup` turns that into a `Regrouping` (a `RowMatching` for dense rows, ToMe's
`PackedMatching` for packed ones: gathers and one scatter), which applies to any per-token tensor
of the layout (values, sizes, sources) and combines each group by its size-weighted average, or
weighted by per-token `weights` (EViT's attention).

Staying tokens keep their position order within the clip; a group sits where its staying token
sat. Token order never changes a logit (attention is permutation-equivariant once the positions
are added).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastast_cli.models.packing import Layout
from fastast_cli.models.reduction.base import merge_tokens
from fastast_cli.models.reduction.tome import PackedMatching


@dataclass
class ClipView:
    """The mergeable tokens of every clip as padded rows [K, T].

    removed, r: tokens each clip loses, as ints (dense: one value for every row) and as a
    tensor [K]. valid: [K, T] real (not padding) entries. layout, index: the packed layout and
    [K, T] flat token index of each entry (packed only; index 0 at padding). row, slot: [K]
    attention row of each clip and [K, T] slot of each entry in it; prefix_slot: [K, P] slots
    of its CLS and DIST.
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

    @classmethod
    def of_rows(cls, tokens: torch.Tensor, removed: list[int], protected: int) -> ClipView:
        """Dense rows: `tokens` [B, N, D], one clip per row, every row losing `removed[0]`
        (no padding; the view's rows are the attention rows)."""
        device = tokens.device
        batch, length = tokens.shape[:2]
        position = torch.arange(protected, length, device=device).expand(batch, -1)  # [B, T]
        r = torch.full((batch,), removed[0], device=device, dtype=torch.long)
        everywhere = torch.ones_like(position, dtype=torch.bool)
        leading = torch.arange(protected, device=device)
        return cls(protected, list(removed), r, everywhere, torch.arange(batch, device=device),
                   position, leading.expand(batch, -1))

    @classmethod
    def of_clips(cls, tokens: torch.Tensor, layout: Layout, removed: list[int],
                 protected: int) -> ClipView:
        """Packed clips: flat `tokens` [N, D] laid out by `layout`, clip c losing
        `removed[c]`."""
        device = tokens.device
        leading = torch.arange(protected, device=device)
        mergeable = (layout.count_tensor - protected).clamp_min(0)  # [K]
        longest = max(max(layout.counts) - protected, 1)  # from the host: no device sync
        within = torch.arange(longest, device=device)  # [T]
        valid = within < mergeable[:, None]  # [K, T]
        index = torch.where(valid, layout.starts[:, None] + protected + within, 0)
        offsets = layout.offset_tensor
        slot = torch.where(valid, offsets[:, None] + protected + within, 0)
        r = torch.tensor(removed, device=device, dtype=torch.long)
        rows = layout.row_tensor
        return cls(protected, list(removed), r, valid, rows, slot, offsets[:, None] + leading,
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

    def clip_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Per attention row values [R, ...] → the row of every clip [K, ...] (dense: the rows
        themselves, no copy)."""
        if self.index is None:
            return rows
        return rows[self.row]

    def per_clip(self, make: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        """[K, T] from a rule evaluated on the host: `make(count, remove)` → [T] for a clip of
        `count` mergeable tokens that loses `remove` (T: this view's width).

        Dense rows all have one shape: one call, expanded over the rows (the batch size stays
        symbolic when the model is exported); packed: one call per clip. Nothing is read back
        from the device.
        """
        width = self.valid.shape[1]
        if self.index is None:
            return make(width, self.removed[0]).to(self.valid.device).expand(
                self.valid.shape[0], -1)
        counts = [max(count - self.protected, 0) for count in self.layout.counts]
        return torch.stack([make(count, remove) for count, remove
                            in zip(counts, self.removed, strict=True)]).to(self.valid.device)

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
            matching = RowMatching.of(keep, moved, self.protected, self.removed[0])
            return Regrouping(matching, token_weights)
        layout = self.layout.resized(
            [n - r for n, r in zip(self.layout.counts, self.removed, strict=True)])
        starts, old = layout.starts, self.layout
        destination = starts[old.token_clip] + old.token_position  # right for CLS and DIST
        destination[self.index[self.valid]] = (starts[:, None] + moved)[self.valid]
        merged = torch.zeros_like(destination, dtype=torch.bool)
        merged[self.index[self.valid]] = ~keep[self.valid]
        matching = PackedMatching.from_destination(destination, merged, layout)
        return Regrouping(matching, token_weights)


@dataclass
class RowMatching:
    """Dense rows regrouped: `kept` [B, N - r, 1] the token that holds each new slot (position
    order), `merged` [B, r, 1] the tokens that join another, `into` [B, r, 1] the slot each
    joins. Applied with gathers and one scatter, as ToMe's `Matching`."""

    kept: torch.Tensor
    merged: torch.Tensor
    into: torch.Tensor

    @classmethod
    def of(cls, keep: torch.Tensor, moved: torch.Tensor, protected: int,
           removed: int) -> RowMatching:
        """From which mergeable tokens stay [B, T], every one's new position [B, T] and the
        tokens every row loses."""
        leading = torch.zeros_like(keep[:, :protected])
        goes = torch.cat([leading, ~keep], dim=1)  # [B, N]
        order = goes.long().argsort(dim=1, stable=True)[..., None]  # staying first, in order
        stays = goes.shape[1] - removed
        merged = order[:, stays:]
        into = moved.gather(1, merged[..., 0] - protected)[..., None]
        return cls(order[:, :stays], merged, into)

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Combine `values` [B, N, C] per group with `reduce` → [B, N - r, C]."""
        channels = values.shape[-1]
        stay = values.gather(1, self.kept.expand(-1, -1, channels))
        go = values.gather(1, self.merged.expand(-1, -1, channels))
        return stay.scatter_reduce(1, self.into.expand(-1, -1, channels), go, reduce=reduce)


@dataclass
class Regrouping:
    """Tokens joined into groups (dense `RowMatching` or packed `PackedMatching`), combined by
    the size-weighted average or, with per-token `weights` (dense [B, N, 1], packed [N, 1]),
    by the weighted mean."""

    matching: RowMatching | PackedMatching
    weights: torch.Tensor | None = None

    @property
    def layout(self) -> Layout | None:
        """The packed layout after the regrouping (None for dense rows)."""
        return getattr(self.matching, "layout", None)

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Combine `values` (dense [B, N, C], packed [N, C]) per group with `reduce`."""
        return self.matching.merge(values, reduce)

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
