"""Sequence packing for variable-length clips, and token merging that stays inside each clip.

Representation. The tokens of all clips of a batch live back to back in one flat tensor
`[N, D]` (clip 0's tokens, then clip 1's, ...; each clip `[CLS, DIST, patches...]`). Every
per-token layer (LayerNorm, qkv, MLP) runs on that flat tensor, so padding costs nothing there.
Only attention and the ToMe similarity need rows: a `Layout` scatters the flat tokens into rows
`[R, L, C]`, where each row holds whole clips (greedy first-fit-decreasing packing, at most
`max_tokens` tokens per row) followed by zero padding, and gathers them back.

Attention inside a row is block-diagonal: a token attends only to tokens of its own clip. The
mask is built from the per-slot `segment` (the clip id, -1 for padding): query and key must
have the same segment. Padding slots thus attend only to padding (no all-masked row, no NaN)
and are never attended by a real token, so padding never influences a result. Proportional
attention adds log(size) of each key on top of the same mask.

Token merging in packed rows (`packed_bipartite_matching`) does for every clip exactly what
`tome.bipartite_soft_matching` does for that clip alone: the clip's mergeable tokens (all but
its CLS and DIST) alternate between set A and set B by their position inside the clip; each A
token finds its most similar B token *of the same clip*; the clip's own r_i best edges are
merged; the clip becomes `[CLS, DIST, unmerged A in position order, B]`. Each clip may have its
own r_i, so the flat tensor shrinks by a different amount per clip and the rows are re-laid out
after every merge (`Layout.resized`); a merge never crosses clips and padding is never a
candidate, because A and B are taken from the flat tokens, which hold no padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from fastast_cli.models.tome import max_merge, merge_tokens


def first_fit_decreasing(counts: Sequence[int], max_tokens: int) -> list[int]:
    """Row of every clip: longest clips first, each into the first row with room left.

    counts: tokens per clip. Returns one row index per clip; rows are numbered in order of
    opening. Raises ValueError for a clip longer than `max_tokens`.
    """
    too_long = [(i, n) for i, n in enumerate(counts) if n > max_tokens]
    if too_long:
        clip, count = too_long[0]
        raise ValueError(
            f"clip {clip} has {count} tokens, more than max_tokens={max_tokens}: raise "
            "max_tokens or cut the clip"
        )
    rows = [0] * len(counts)
    free: list[int] = []  # tokens left in each open row
    for clip in sorted(range(len(counts)), key=lambda i: -counts[i]):
        row = next((j for j, room in enumerate(free) if room >= counts[clip]), len(free))
        if row == len(free):
            free.append(max_tokens)
        free[row] -= counts[clip]
        rows[clip] = row
    return rows


def exclusive_cumsum(values: torch.Tensor) -> torch.Tensor:
    """[0, v0, v0 + v1, ...] without the total: the start of each run of a ragged sequence."""
    return torch.cumsum(values, 0) - values


@dataclass(frozen=True, eq=False)
class Layout:
    """Where the flat tokens of each clip sit in packed rows.

    counts: tokens of each clip, in flat order. rows: the row each clip is packed into; within a
    row, clips keep their flat (ascending id) order, then padding fills the row to `length`.
    Everything derived (offsets, per-slot segment, index maps) is computed once, on `device`.
    """

    counts: tuple[int, ...]
    rows: tuple[int, ...]
    device: torch.device = torch.device("cpu")

    @classmethod
    def pack(
        cls, counts: Sequence[int], max_tokens: int, device: torch.device | str = "cpu"
    ) -> Layout:
        """Clips packed greedily into rows of at most `max_tokens` tokens."""
        return cls(tuple(counts), tuple(first_fit_decreasing(counts, max_tokens)), device)

    @classmethod
    def one_per_row(cls, counts: Sequence[int], device: torch.device | str = "cpu") -> Layout:
        """Every clip in its own row, padded to the longest clip (a classic padded batch)."""
        return cls(tuple(counts), tuple(range(len(counts))), device)

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))

    def resized(self, counts: Sequence[int]) -> Layout:
        """The same clips in the same rows, with new token counts (after merging)."""
        return Layout(tuple(counts), self.rows, self.device)

    @property
    def num_clips(self) -> int:
        return len(self.counts)

    @property
    def num_tokens(self) -> int:
        return sum(self.counts)

    @cached_property
    def num_rows(self) -> int:
        return max(self.rows, default=-1) + 1

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """First slot of each clip inside its row."""
        filled = [0] * self.num_rows
        offsets = []
        for row, count in zip(self.rows, self.counts, strict=True):
            offsets.append(filled[row])
            filled[row] += count
        return tuple(offsets)

    @cached_property
    def length(self) -> int:
        """Slots per row: the fullest row's tokens."""
        filled = [0] * self.num_rows
        for row, count in zip(self.rows, self.counts, strict=True):
            filled[row] += count
        return max(filled, default=0)

    @cached_property
    def is_dense(self) -> bool:
        """One clip per row and no padding: rows are a plain reshape of the flat tokens."""
        return list(self.rows) == list(range(self.num_clips)) and all(
            count == self.length for count in self.counts
        )

    @cached_property
    def count_tensor(self) -> torch.Tensor:
        """[K] tokens of each clip, as a tensor."""
        return torch.tensor(self.counts, device=self.device, dtype=torch.long)

    @cached_property
    def starts(self) -> torch.Tensor:
        """[K] flat index of each clip's first token."""
        return exclusive_cumsum(self.count_tensor)

    @cached_property
    def token_clip(self) -> torch.Tensor:
        """[N] clip of every flat token."""
        clips = torch.arange(self.num_clips, device=self.device)
        # output_size spares a device → host sync on CUDA
        return clips.repeat_interleave(self.count_tensor, output_size=self.num_tokens)

    @cached_property
    def token_position(self) -> torch.Tensor:
        """[N] position of every flat token inside its clip (0 = CLS, 1 = DIST, ...)."""
        return torch.arange(self.num_tokens, device=self.device) - self.starts[self.token_clip]

    @cached_property
    def slot(self) -> torch.Tensor:
        """[N] index of every flat token in the rows, flattened to [R·L]."""
        rows = torch.tensor(self.rows, device=self.device)
        offsets = torch.tensor(self.offsets, device=self.device)
        clip = self.token_clip
        return rows[clip] * self.length + offsets[clip] + self.token_position

    @cached_property
    def segment(self) -> torch.Tensor:
        """[R, L] clip of every row slot, -1 for padding."""
        segment = torch.full((self.num_rows * self.length,), -1, device=self.device)
        segment[self.slot] = self.token_clip
        return segment.view(self.num_rows, self.length)

    @cached_property
    def attention_mask(self) -> torch.Tensor:
        """[R, 1, L, L] additive float mask: 0 where query and key share a segment, else -inf.

        Padding (segment -1) thus attends only to padding and no real token attends to it.
        """
        same_clip = self.segment[:, :, None] == self.segment[:, None, :]  # [R, L, L]
        mask = torch.zeros(same_clip.shape, device=self.device)
        return mask.masked_fill_(~same_clip, float("-inf"))[:, None]

    def forget_mask(self) -> None:
        """Free the cached attention mask (R·L² floats) once no attention will use it."""
        self.__dict__.pop("attention_mask", None)

    def to_rows(self, values: torch.Tensor) -> torch.Tensor:
        """Flat values [N, C] → rows [R, L, C], padding slots zero."""
        channels = values.shape[-1]
        if self.is_dense:
            return values.reshape(self.num_rows, self.length, channels)
        rows = values.new_zeros(self.num_rows * self.length, channels)
        return rows.index_copy(0, self.slot, values).view(self.num_rows, self.length, channels)

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows [R, L, C] → flat values [N, C]; padding slots are dropped."""
        flat = rows.reshape(self.num_rows * self.length, rows.shape[-1])
        return flat if self.is_dense else flat.index_select(0, self.slot)


def block_diagonal_bias(
    layout: Layout, log_sizes: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """Additive SDPA mask: tokens attend within their clip, plus log(size) per key.

    log_sizes: [N, 1] log of every flat token's size (proportional attention), or None.
    Returns [R, 1, L, L] (-inf across clips and between padding and real tokens), or, for a
    dense layout (one clip per row, no padding), only the size term [R, 1, 1, L] or None.
    """
    key_bias = None if log_sizes is None else layout.to_rows(log_sizes.to(dtype))[..., 0]
    if layout.is_dense:
        return None if key_bias is None else key_bias[:, None, None, :]
    blocked = layout.attention_mask.to(dtype)
    return blocked if key_bias is None else blocked + key_bias[:, None, None, :]


@dataclass
class PackedMatching:
    """Bipartite matching of every clip in a packed batch; applies to any flat per-token tensor.

    kept: [N'] the token that stays in each slot of the merged batch (laid out by `layout`:
    every clip `[CLS, DIST, unmerged A, B]`); merged: [M] the A tokens that go; into: [M] the
    slot of the B partner each of them joins. Duck-types `tome.Matching`, so `tome.merge_tokens`
    merges packed tokens as it merges batched ones.
    """

    kept: torch.Tensor
    merged: torch.Tensor
    into: torch.Tensor
    layout: Layout

    @classmethod
    def from_destination(
        cls, destination: torch.Tensor, merged: torch.Tensor, layout: Layout
    ) -> PackedMatching:
        """From the new slot of every token [N] and which tokens merge into another [N]."""
        token = torch.arange(len(destination), device=destination.device)
        kept = torch.empty(layout.num_tokens, dtype=torch.long, device=destination.device)
        kept[destination[~merged]] = token[~merged]
        return cls(kept, token[merged], destination[merged], layout)

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Apply the matching to flat `values` [N, C] → [N', C], combining with `reduce`."""
        stay = values.index_select(0, self.kept)
        go = values.index_select(0, self.merged)
        if reduce == "sum":
            return stay.index_add(0, self.into, go)
        return stay.scatter_reduce(0, self.into[:, None].expand_as(go), go, reduce=reduce)


@dataclass
class Bipartition:
    """The A and B sets of every clip: which flat tokens, and how they pack into rows.

    A token of clip c at mergeable position m (position - protected) is in A when m is even and
    in B when m is odd; `a_index`/`b_index` [Na]/[Nb] list them in flat order (clip by clip,
    each in position order), and `a_layout`/`b_layout` pack the sets into the clips' rows.
    """

    a_index: torch.Tensor
    b_index: torch.Tensor
    a_layout: Layout
    b_layout: Layout

    @classmethod
    def of(cls, layout: Layout, protected: int) -> Bipartition:
        a_counts = [(max(n - protected, 0) + 1) // 2 for n in layout.counts]
        b_counts = [max(n - protected, 0) // 2 for n in layout.counts]
        a_layout, b_layout = layout.resized(a_counts), layout.resized(b_counts)
        # the i-th A token of clip c sits at position protected + 2i, the i-th B token one later
        a_index = layout.starts[a_layout.token_clip] + protected + 2 * a_layout.token_position
        b_index = layout.starts[b_layout.token_clip] + protected + 1 + 2 * b_layout.token_position
        return cls(a_index, b_index, a_layout, b_layout)


def packed_bipartite_matching(
    keys: torch.Tensor, layout: Layout, r: Sequence[int], protected: int
) -> PackedMatching:
    """Match, in every clip c, its `r[c]` A tokens with the most similar B token of the clip.

    keys: [N, C] flat similarity metric (attention keys averaged over heads).
    layout: where the N tokens sit. r: tokens each clip loses, at most `max_merge` of its count.
    protected: leading tokens of each clip excluded from matching (2: CLS and DIST).
    """
    for count, remove in zip(layout.counts, r, strict=True):
        if remove > max_merge(count, protected):
            raise ValueError(f"cannot merge {remove} of a clip's {count} tokens")
    if not any(r):
        stay = torch.arange(layout.num_tokens, device=keys.device)
        return PackedMatching.from_destination(
            stay, torch.zeros_like(stay, dtype=torch.bool), layout
        )
    sets = Bipartition.of(layout, protected)
    metric = keys / keys.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    set_a = sets.a_layout.to_rows(metric[sets.a_index])  # [R, La, C]
    set_b = sets.b_layout.to_rows(metric[sets.b_index])  # [R, Lb, C]
    similarity = set_a @ set_b.transpose(-1, -2)  # [R, La, Lb]
    same_clip = sets.a_layout.segment[:, :, None] == sets.b_layout.segment[:, None, :]
    similarity = similarity.masked_fill(~same_clip, float("-inf"))
    best, partner_slot = similarity.max(dim=-1)  # [R, La]
    best = sets.a_layout.from_rows(best[..., None])[:, 0]  # [Na]
    partner_slot = sets.a_layout.from_rows(partner_slot[..., None])[:, 0]  # [Na], slot in row
    partner = _slot_to_b(sets, partner_slot)  # [Na] index of the partner B inside its clip
    rank = _rank_within_clip(best, sets.a_layout)  # [Na] 0 = strongest edge of the clip
    destination, merged = _destinations(layout, sets, rank, partner, r, protected)
    after = layout.resized([n - k for n, k in zip(layout.counts, r, strict=True)])
    return PackedMatching.from_destination(destination, merged, after)


def _slot_to_b(sets: Bipartition, partner_slot: torch.Tensor) -> torch.Tensor:
    """Row slot of each A token's partner → the partner's index among its clip's B tokens."""
    offsets = torch.tensor(sets.b_layout.offsets, device=partner_slot.device)
    return partner_slot - offsets[sets.a_layout.token_clip]


def _rank_within_clip(score: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Rank of every token among its clip's tokens by descending `score` (ties: earlier first)."""
    by_score = torch.sort(score, descending=True, stable=True).indices
    clip = layout.token_clip
    order = by_score[torch.sort(clip[by_score], stable=True).indices]  # clip by clip, best first
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device) - layout.starts[clip[order]]
    return rank


def _destinations(
    layout: Layout,
    sets: Bipartition,
    rank: torch.Tensor,
    partner: torch.Tensor,
    r: Sequence[int],
    protected: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat index [N] of every token after merging, and which tokens merge [N] (bool).

    Each clip becomes [prefix, unmerged A in position order, B]; a merged A token goes to its
    partner.
    """
    device = rank.device
    remove = torch.tensor(r, device=device, dtype=torch.long)  # [K]
    a_counts = sets.a_layout.count_tensor
    start = exclusive_cumsum(layout.count_tensor - remove)  # [K] clip starts after merging
    first_b = start + protected + a_counts - remove  # [K] where each clip's B tokens begin
    destination = start[layout.token_clip] + layout.token_position  # right for prefix tokens
    b_clip = sets.b_layout.token_clip
    destination[sets.b_index] = first_b[b_clip] + sets.b_layout.token_position
    a_clip = sets.a_layout.token_clip
    goes = rank < remove[a_clip]  # [Na]
    stays_before = exclusive_cumsum((~goes).long())  # [Na] unmerged A tokens earlier in flat order
    within = stays_before - stays_before[sets.a_layout.starts[a_clip]]  # ... earlier in the clip
    kept = start[a_clip] + protected + within
    merged_into = first_b[a_clip] + partner
    destination[sets.a_index] = torch.where(goes, merged_into, kept)
    merged = torch.zeros_like(destination, dtype=torch.bool)
    merged[sets.a_index] = goes
    return destination, merged


@dataclass
class PackedState:
    """What token merging carries from block to block alongside the flat tokens.

    layout: where the current tokens sit (shrinks with every merge).
    sizes: [N, 1] original patches per token (None until the first merge: all ones).
    """

    layout: Layout
    sizes: torch.Tensor | None = None

    def attention_bias(self, dtype: torch.dtype, proportional: bool) -> torch.Tensor | None:
        """The block-diagonal SDPA mask, with log(size) per key when `proportional`."""
        log_sizes = self.sizes.log() if proportional and self.sizes is not None else None
        return block_diagonal_bias(self.layout, log_sizes, dtype)

    def merge(self, matching: PackedMatching, tokens: torch.Tensor) -> torch.Tensor:
        """Merge flat `tokens` [N, D] → [N', D] and update sizes and layout to match."""
        if self.sizes is None:
            self.sizes = tokens.new_ones(tokens.shape[0], 1)
        tokens, self.sizes = merge_tokens(matching, tokens, self.sizes)
        self.layout = matching.layout
        return tokens
