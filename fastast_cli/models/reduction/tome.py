"""Token Merging (ToMe, Bolya et al. 2023, Sec. 3): bipartite soft matching, dense and packed.

Inside every block, between the attention and the MLP branch, the `r` most redundant tokens are
merged into their most similar partner:

1. the mergeable tokens (all but the `protected` leading ones, CLS and DIST in AST) are split
   alternately into set A (even positions) and set B (odd positions);
2. each A token draws an edge to its most similar B token (cosine similarity of the attention
   keys averaged over heads);
3. the `r` A tokens with the strongest edges are merged into their B partners by a size-weighted
   average; the other A tokens stay;
4. the result is `[protected, unmerged A, B]`, the unmerged A tokens in position order (as in
   ToMe, so the alternating A/B split of the next block sees the tokens in their original order).

Protected tokens never take part in the matching, so they keep their values and stay at the
front, whatever `r` is. `sizes` counts how many original patches each token stands for; it feeds
proportional attention (`log(size)` added to each key's logits) and the weighted average.

Packed rows (`packed_bipartite_matching`) do for every clip exactly what
`bipartite_soft_matching` does for that clip alone: the A/B split follows each token's position
inside its clip, each A token finds its most similar B token *of the same clip*, the clip's own
r_i best edges merge, and the clip becomes `[CLS, DIST, unmerged A in position order, B]`; a
merge never crosses clips and padding is never a candidate (A and B are taken from the flat
tokens, which hold no padding).

`ToMe.match` picks the matcher by the step's layout (`bipartite_matching`); the records it
returns (`Matching`, `PackedMatching`) and their size-weighted combine live in matching.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fastast_cli.models.reduction.layout import Layout, device_tensor, exclusive_cumsum
from fastast_cli.models.reduction.matching import Matching, PackedMatching, ReductionStep


def bipartite_soft_matching(keys: torch.Tensor, r: int, protected: int) -> Matching:
    """Match `r` tokens of set A to their most similar token of set B.

    keys: [B, N, C] similarity metric per token (attention keys summed over heads).
    r: tokens to remove; must not exceed `max_merge(N, protected)`.
    protected: leading tokens excluded from matching (2 for AST's CLS and DIST).
    """
    metric = keys[:, protected:]
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    set_a, set_b = metric[:, ::2], metric[:, 1::2]
    similarity = set_a @ set_b.transpose(-1, -2)  # [B, Na, Nb]
    best, partner = similarity.max(dim=-1)  # [B, Na]
    # stable: ties keep position order, so every backend (eager, compiled, ONNX) merges alike
    order = best.argsort(dim=-1, descending=True, stable=True).unsqueeze(-1)  # [B, Na, 1]
    merged, unmerged = order[:, :r], order[:, r:]
    unmerged = unmerged.sort(dim=1).values  # back to position order, as ToMe keeps them
    return Matching(protected, unmerged, merged, partner.unsqueeze(-1).gather(1, merged))


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

    keys: [N, C] flat similarity metric (attention keys summed over heads).
    layout: where the N tokens sit. r: tokens each clip loses, within `allowed_merges`.
    protected: leading tokens of each clip excluded from matching (2: CLS and DIST).
    """
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
    offsets = sets.b_layout.offset_tensor
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
    remove = device_tensor(r, device)  # [K]
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


class ToMe:
    """ToMe's bipartite soft matching on the attention keys averaged over heads (the default)."""

    name = "tome"

    def match(self, step: ReductionStep) -> Matching | PackedMatching:
        return bipartite_matching(step, step.summed_keys())


def bipartite_matching(step: ReductionStep, keys: torch.Tensor) -> Matching | PackedMatching:
    """ToMe's matching of `step` on `keys` (dense [B, N, C], packed flat [N, C]): per row when
    dense, per clip inside its row when packed."""
    if step.layout is None:
        return bipartite_soft_matching(keys, step.row_r, step.protected)
    return packed_bipartite_matching(keys, step.layout, step.clip_r, step.protected)
