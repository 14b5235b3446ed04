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
attention-weighted fusion; ToFu's pruning and MLERP in tofu.py). `merge`, `keep` and the
average are written once, in `TokenMatching`, on the rows flattened to [T, C]; a record only
says where every token goes (`flat_index`).

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

    def summed_keys(self) -> torch.Tensor:
        """Keys summed over heads, per token: dense [B, N, hd], packed flat [N, hd].

        ToMe's metric is their mean (Bolya et al. 2023, Sec. 3); every method compares them by
        cosine similarity, which the mean's 1/H does not change, so the division is left out.
        """
        rows = self.key[:, 0]  # [R, L, hd]
        for head in range(1, self.key.shape[1]):  # faster than `sum` over the strided head
            rows = rows + self.key[:, head]  # axis of the attention's key view
        return rows if self.layout is None else self.layout.from_rows(rows)

    def mean_keys(self) -> torch.Tensor:
        """Keys averaged over heads, per token (ToMe's metric as the paper states it):
        `summed_keys` / H, for methods that need the mean's scale."""
        return self.summed_keys() / self.key.shape[1]

    def clip_view(self) -> ClipView:
        """The mergeable tokens of every clip as padded rows [K, T] (`ClipView`)."""
        return ClipView.of(self.tokens, self.layout, self.clip_r, self.protected)


class TokenMatching:
    """Which tokens join which: applies to any per-token tensor of the layout.

    A subclass says where every token goes (`flat_index`); merging, pruning and the
    size-weighted average are written once, here, on the rows flattened to [T, C] (dense
    [B, N, C] → [B·N, C]; packed values are flat already). `layout`: the packed layout after the
    merge, None when dense.
    """

    layout: Layout | None = None

    def flat_index(self, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices into the flattened rows of values with `length` tokens per row: the token
        holding every slot of the result [T'], the tokens that join another [M], and the slot
        of the result each of them joins [M] (into the result's flattened rows)."""
        raise NotImplementedError

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Each group of `values` (dense [B, N, C] → [B, N - r, C], packed [N, C] → [N', C])
        combined with `reduce`: one row copy for the slots, one for the tokens that go, one
        indexed add (or `reduce`) of those into their slots."""
        stay, merged, into = self.flat_index(values.shape[-2])
        flat = values.reshape(-1, values.shape[-1])  # [T, C]
        out = combine_rows(flat.index_select(0, stay), into, flat.index_select(0, merged),
                           reduce)
        return _unflatten(out, values)

    def keep(self, values: torch.Tensor) -> torch.Tensor:
        """Every slot's own token, the tokens that join another dropped (pruning): dense
        [B, N, C] → [B, N - r, C], packed [N, C] → [N', C]."""
        stay = self.flat_index(values.shape[-2])[0]
        return _unflatten(values.reshape(-1, values.shape[-1]).index_select(0, stay), values)

    def combine(
        self, tokens: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group → the size-weighted average of its tokens (ToMe, Bolya et al. 2023,
        Sec. 3); sizes add up. tokens [B, N, D] or [N, D], sizes [B, N, 1] or [N, 1]."""
        return self.weighted_average(tokens, sizes)

    def weighted_average(
        self, values: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group → Σ w·x / Σ w over its members, and Σ w: values [B, N, C] or [N, C],
        weights [B, N, 1] or [N, 1] → the reduced values and weight sums.

        Written as an update of each slot's own value x_s by the values x_g that join it,
        x_s + Σ_g w_g (x_g − x_s) / W with W = w_s + Σ_g w_g (the same average), so only the
        values that move are weighted: the full rows are copied once, never scaled; a group
        of weight 0 keeps its slot's value.
        """
        stay, merged, into = self.flat_index(values.shape[-2])
        flat, weight = values.reshape(-1, values.shape[-1]), weights.reshape(-1)  # [T, C], [T]
        go_weight = weight.index_select(0, merged)  # [M]
        total = weight.index_select(0, stay).index_add_(0, into, go_weight)  # [T'] group sums
        out = flat.index_select(0, stay)  # [T', C] every slot's own value
        share = go_weight / total.index_select(0, into).clamp_min(1e-12)  # [M]
        pull = (flat.index_select(0, merged) - out.index_select(0, into)).mul_(share[:, None])
        return (_unflatten(out.index_add_(0, into, pull), values),
                _unflatten(total[:, None], weights))


def _unflatten(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Flat result rows [T', C] → shaped as `like` with fewer tokens: dense [B, N', C], packed
    [N', C]."""
    return rows.view(*like.shape[:-2], -1, rows.shape[-1])


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
    _index: tuple[torch.Tensor, ...] | None = field(default=None, init=False, repr=False,
                                                    compare=False)

    def flat_index(self, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`TokenMatching.flat_index` of rows `[protected, A, B, A, B, ...]` (A and B alternate
        after the prefix): the result is `[protected, unmerged A, B]` per row. Computed once per
        matching."""
        if self._index is None:
            batch, stays, _ = self.unmerged.shape
            result = length - self.merged.shape[1]  # N - r
            device = self.unmerged.device
            row = torch.arange(batch, device=device)[:, None]  # [B, 1]
            start = row * length + self.protected  # [B, 1] every row's first mergeable token
            prefix = torch.arange(-self.protected, 0, device=device)
            b_position = torch.arange(1, length - self.protected, 2, device=device)
            stay = torch.cat([start + prefix, start + 2 * self.unmerged[..., 0],
                              start + b_position], dim=1)  # [B, N - r]
            merged = start + 2 * self.merged[..., 0]  # [B, r]
            into = self.partner[..., 0] + (row * result + self.protected + stays)  # [B, r]
            self._index = stay.flatten(), merged.flatten(), into.flatten()
        return self._index


def combine_rows(
    out: torch.Tensor, into: torch.Tensor, go: torch.Tensor, reduce: str
) -> torch.Tensor:
    """Combine rows `go` [M, C] into rows `into` [M] of `out` [N', C] (in place) with `reduce`
    ("sum": an indexed add; else `scatter_reduce_`'s, the slot's own row included), each
    slot's rows in index order."""
    if reduce == "sum":
        return out.index_add_(0, into, go)
    return out.scatter_reduce_(0, into[:, None].expand_as(go), go, reduce=reduce)


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
        """From the new slot of every token [N] and which tokens merge into another [N].

        Scatters only (no boolean-mask indexing, which waits for the device on CUDA): every
        token is written to its slot, a merged one to a spare slot past the end; the merged
        tokens, in token order, to their rank among the merged.
        """
        device = destination.device
        stays, goes = layout.num_tokens, len(destination) - layout.num_tokens  # N', M
        token = torch.arange(len(destination), device=device)
        stay = torch.empty(stays + 1, dtype=torch.long, device=device)
        stay = stay.scatter_(0, torch.where(merged, stays, destination), token)[:stays]
        among = torch.where(merged, merged.long().cumsum(0) - 1, goes)  # [N] rank, M if stays
        which = torch.empty(goes + 1, dtype=torch.long, device=device)
        which = which.scatter_(0, among, token)[:goes]  # [M] the merged tokens in token order
        return cls(stay, which, destination.index_select(0, which), layout)

    def flat_index(self, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`TokenMatching.flat_index`: the values are flat already."""
        return self.stay, self.merged, self.into


@dataclass
class RowMatching(TokenMatching):
    """Dense rows regrouped: `stay` [B, N - r, 1] the token that holds each new slot (position
    order), `merged` [B, r, 1] the tokens that join another, `into` [B, r, 1] the slot each
    joins. Applied with row copies and one indexed add, as ToMe's `Matching`."""

    stay: torch.Tensor
    merged: torch.Tensor
    into: torch.Tensor
    _index: tuple[torch.Tensor, ...] | None = field(default=None, init=False, repr=False,
                                                    compare=False)

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

    def flat_index(self, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`TokenMatching.flat_index` of the regrouped rows. Computed once per matching."""
        if self._index is None:
            batch, stays = self.stay.shape[:2]
            row = torch.arange(batch, device=self.stay.device)[:, None]  # [B, 1]
            self._index = ((self.stay[..., 0] + row * length).flatten(),
                           (self.merged[..., 0] + row * length).flatten(),
                           (self.into[..., 0] + row * stays).flatten())
        return self._index


@dataclass
class CombiningMatching(TokenMatching):
    """Another matching's groups, combined this matching's own way (`combine`): `merge` and
    `layout` are the inner `matching`'s."""

    matching: TokenMatching

    @property
    def layout(self) -> Layout | None:
        """The packed layout after the merge (None for dense rows)."""
        return self.matching.layout

    def flat_index(self, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The inner matching's `flat_index`."""
        return self.matching.flat_index(length)


@dataclass
class Regrouping(CombiningMatching):
    """Tokens joined into groups (dense `RowMatching` or packed `PackedMatching`), combined by
    the size-weighted average or, with per-token `weights` (dense [B, N, 1], packed [N, 1]),
    by the weighted mean."""

    matching: RowMatching | PackedMatching
    weights: torch.Tensor | None = None

    def combine(
        self, tokens: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group → its weighted mean (`weights`, else sizes); sizes add up."""
        if self.weights is None:
            return super().combine(tokens, sizes)
        # in float32: attention weights can underflow in half precision
        fused = self.weighted_average(tokens.float(), self.weights.float())[0]
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
    spare = destination.new_zeros(1)  # where padding entries are written, then dropped
    destination = torch.cat([destination, spare]).scatter_(
        0, view.target, (starts[:, None] + moved).flatten())[: old.num_tokens]
    merged = torch.zeros(old.num_tokens + 1, dtype=torch.bool, device=keep.device)
    merged = merged.scatter_(0, view.target, (~keep).flatten())[: old.num_tokens]
    matching = PackedMatching.from_destination(destination, merged, layout)
    return Regrouping(matching, token_weights)
