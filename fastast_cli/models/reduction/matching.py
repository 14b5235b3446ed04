"""What a reduction method sees in one block (`ReductionStep`) and what it returns (a matching).

A method (ToMe, PiToMe, EViT, ToFu, random) is one class with a `name` and
`match(step) -> TokenMatching` (`ReductionMethod`), written once for both layouts:

- dense (`step.layout` None): tokens [B, N, D], one clip per row (the fixed AST);
- packed (`step.layout` a `Layout`): flat tokens [N, D] of clips of any length packed into rows
  (ElasticAST); a matching there never crosses clips.

r, the tokens a clip loses in a block, is `step.clip_r`, already capped (`allowed_merges`):
packed, one value per clip in layout order; dense, ONE value shared by every row, as [r] (rows
are not counted, so the batch size stays symbolic when the model is exported; `step.row_r`
reads it). This is the one place that convention is decided.

A matching maps any per-token tensor (tokens, sizes, sources) to the reduced sequence with
`merge(values, reduce)`: dense [B, N, C] → [B, N - r, C], packed [N, C] → [N', C]; `layout` is
the packed layout after the merge (None when dense). `combine(tokens, sizes)` turns each group
into one token: by default the size-weighted average (ToMe, Bolya et al. 2023, Sec. 3); a
matching that combines its own way overrides it (`Regrouping` with weights: EViT's
attention-weighted fusion; ToFu's pruning and MLERP in tofu.py).

The records: `Matching` (ToMe's bipartite matching of dense rows), `PackedMatching` (any
matching of packed clips: ToMe's per clip, or a regrouping), `RowMatching` (a regrouping of
dense rows) and `Regrouping` (either regrouping, with optional combine weights), which
`regroup` builds from a `ClipView` answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from fastast_cli.models.reduction.layout import ClipView, Layout


@dataclass
class ReductionStep:
    """Everything a reduction method may use in one block.

    tokens: the block's tokens after attention, dense [B, N, D] or packed flat [N, D].
    query, key: per-head queries and keys as attention saw them, rows [R, H, L, hd]
        (dense: R = B, L = N; packed: `layout` says which slot holds which token).
    layout: the packed layout of the tokens, None when dense.
    clip_r: tokens each clip loses in this block, capped (see the module docstring).
    block, depth: index of this block and number of blocks (for depth-dependent methods).
    protected: leading tokens of each clip that are never reduced (CLS and DIST).
    bias: the additive attention mask the block used, broadcastable to [R, 1, L, L]
        (proportional attention's log(size) per key, the packed rows' block-diagonal mask), or
        None.
    """

    tokens: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    layout: Layout | None
    clip_r: list[int]
    block: int
    depth: int
    protected: int
    bias: torch.Tensor | None = None

    @property
    def row_r(self) -> int:
        """Dense: the tokens every row loses."""
        return self.clip_r[0]

    def mean_keys(self) -> torch.Tensor:
        """Keys averaged over heads, per token: dense [B, N, hd], packed flat [N, hd]."""
        rows = self.key.mean(dim=1)  # [R, L, hd]
        return rows if self.layout is None else self.layout.from_rows(rows)

    def clip_view(self) -> ClipView:
        """The mergeable tokens of every clip as padded rows [K, T] (`ClipView`)."""
        return ClipView.of(self.tokens, self.layout, self.clip_r, self.protected)


class TokenMatching:
    """Which tokens join which: applies to any per-token tensor of the layout.

    Subclasses say how values map (`merge`); `combine` is the size-weighted average unless
    overridden. `layout`: the packed layout after the merge, None when dense.
    """

    layout: Layout | None = None

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Each group of `values` (dense [B, N, C], packed [N, C]) combined with `reduce`."""
        raise NotImplementedError

    def combine(
        self, tokens: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group → the size-weighted average of its tokens (ToMe, Bolya et al. 2023,
        Sec. 3); sizes add up. tokens [B, N, D] or [N, D], sizes [B, N, 1] or [N, 1]."""
        weighted = self.merge(tokens * sizes)
        sizes = self.merge(sizes)
        return weighted / sizes, sizes


class ReductionMethod(Protocol):
    """A token-reduction method: picks which tokens each clip loses in one block."""

    name: str

    def match(self, step: ReductionStep) -> TokenMatching:
        """A matching that removes exactly `step.clip_r[c]` tokens of every clip c (dense:
        `step.row_r` of every row)."""
        ...


@dataclass
class Matching(TokenMatching):
    """ToMe's bipartite soft matching of dense rows for one block.

    protected: leading tokens outside the matching. `unmerged` [B, Na - r, 1] indexes the A
    tokens that stay (ascending: position order), `merged` [B, r, 1] the A tokens that go, and
    `partner` [B, r, 1] the B token each of them is merged into.
    """

    protected: int
    unmerged: torch.Tensor
    merged: torch.Tensor
    partner: torch.Tensor

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Apply the matching to `values` [B, N, C] → [B, N - r, C], combining with `reduce`."""
        channels = values.shape[-1]
        prefix, mergeable = values[:, : self.protected], values[:, self.protected :]
        set_a, set_b = mergeable[:, ::2], mergeable[:, 1::2]
        stay = set_a.gather(1, self.unmerged.expand(-1, -1, channels))
        go = set_a.gather(1, self.merged.expand(-1, -1, channels))
        set_b = set_b.scatter_reduce(1, self.partner.expand(-1, -1, channels), go, reduce=reduce)
        return torch.cat([prefix, stay, set_b], dim=1)

    def keep(self, values: torch.Tensor) -> torch.Tensor:
        """Every slot's own token, the merged A tokens dropped (pruning): [B, N, C] →
        [B, N - r, C]."""
        channels = values.shape[-1]
        prefix, mergeable = values[:, : self.protected], values[:, self.protected :]
        stay = mergeable[:, ::2].gather(1, self.unmerged.expand(-1, -1, channels))
        return torch.cat([prefix, stay, mergeable[:, 1::2]], dim=1)


@dataclass
class PackedMatching(TokenMatching):
    """A matching of every clip in a packed batch; applies to any flat per-token tensor.

    stay: [N'] the token that holds each slot of the merged batch (laid out by `layout`); merged:
    [M] the tokens that go; into: [M] the slot of the token each of them joins.
    """

    stay: torch.Tensor
    merged: torch.Tensor
    into: torch.Tensor
    layout: Layout = field()  # required: the base's None is the dense rows' layout

    @classmethod
    def from_destination(
        cls, destination: torch.Tensor, merged: torch.Tensor, layout: Layout
    ) -> PackedMatching:
        """From the new slot of every token [N] and which tokens merge into another [N]."""
        token = torch.arange(len(destination), device=destination.device)
        stay = torch.empty(layout.num_tokens, dtype=torch.long, device=destination.device)
        stay[destination[~merged]] = token[~merged]
        return cls(stay, token[merged], destination[merged], layout)

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Apply the matching to flat `values` [N, C] → [N', C], combining with `reduce`."""
        stay = values.index_select(0, self.stay)
        go = values.index_select(0, self.merged)
        if reduce == "sum":
            return stay.index_add(0, self.into, go)
        return stay.scatter_reduce(0, self.into[:, None].expand_as(go), go, reduce=reduce)

    def keep(self, values: torch.Tensor) -> torch.Tensor:
        """Every slot's own token, the merged tokens dropped (pruning): [N, C] → [N', C]."""
        return values.index_select(0, self.stay)


@dataclass
class RowMatching(TokenMatching):
    """Dense rows regrouped: `stay` [B, N - r, 1] the token that holds each new slot (position
    order), `merged` [B, r, 1] the tokens that join another, `into` [B, r, 1] the slot each
    joins. Applied with gathers and one scatter, as ToMe's `Matching`."""

    stay: torch.Tensor
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
        stay = values.gather(1, self.stay.expand(-1, -1, channels))
        go = values.gather(1, self.merged.expand(-1, -1, channels))
        return stay.scatter_reduce(1, self.into.expand(-1, -1, channels), go, reduce=reduce)


@dataclass
class Regrouping(TokenMatching):
    """Tokens joined into groups (dense `RowMatching` or packed `PackedMatching`), combined by
    the size-weighted average or, with per-token `weights` (dense [B, N, 1], packed [N, 1]),
    by the weighted mean."""

    matching: RowMatching | PackedMatching
    weights: torch.Tensor | None = None

    @property
    def layout(self) -> Layout | None:
        """The packed layout after the regrouping (None for dense rows)."""
        return self.matching.layout

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Combine `values` (dense [B, N, C], packed [N, C]) per group with `reduce`."""
        return self.matching.merge(values, reduce)

    def combine(
        self, tokens: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group → its weighted mean (`weights`, else sizes); sizes add up."""
        if self.weights is None:
            return super().combine(tokens, sizes)
        weights = self.weights.float()  # attention weights can underflow in half precision
        total = self.merge(weights).clamp_min(1e-12)
        fused = self.merge(tokens.float() * weights) / total
        return fused.to(tokens.dtype), self.merge(sizes)


def regroup(
    view: ClipView, keep: torch.Tensor, partner: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> Regrouping:
    """The regrouping of `view` where `keep` [K, T] tokens stay and the others join `partner`
    [K, T] (the mergeable index of the staying token each joins; itself when it stays).

    Staying tokens keep their position order within the clip; a group sits where its staying
    token sat. weights: [K, T] per-entry combine weights (None: the tokens' sizes).
    """
    keep = keep & view.valid
    rank = keep.long().cumsum(dim=1) - 1  # new position of each staying entry
    moved = rank.gather(1, partner) + view.protected  # [K, T] new position in the clip
    token_weights = None if weights is None else view.scatter(weights, 1.0)
    if view.layout is None:
        matching = RowMatching.of(keep, moved, view.protected, view.clip_r[0])
        return Regrouping(matching, token_weights)
    layout = view.layout.resized(
        [n - r for n, r in zip(view.layout.counts, view.clip_r, strict=True)])
    starts, old = layout.starts, view.layout
    destination = starts[old.token_clip] + old.token_position  # right for CLS and DIST
    destination[view.index[view.valid]] = (starts[:, None] + moved)[view.valid]
    merged = torch.zeros_like(destination, dtype=torch.bool)
    merged[view.index[view.valid]] = ~keep[view.valid]
    matching = PackedMatching.from_destination(destination, merged, layout)
    return Regrouping(matching, token_weights)
