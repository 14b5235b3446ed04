"""Token Merging (ToMe, Bolya et al. 2023) for transformers with protected leading tokens.

Inside every block, between the attention and the MLP branch, the `r` most redundant tokens are
merged into their most similar partner:

1. the mergeable tokens (all but the `protected` leading ones, CLS and DIST in AST) are split
   alternately into set A (even positions) and set B (odd positions);
2. each A token draws an edge to its most similar B token (cosine similarity of the attention
   keys averaged over heads);
3. the `r` A tokens with the strongest edges are merged into their B partners by a size-weighted
   average; the other A tokens stay;
4. the result is `[protected, unmerged A, B]`.

Protected tokens never take part in the matching, so they keep their values and stay at the
front, whatever `r` is. `sizes` counts how many original patches each token stands for; it feeds
proportional attention (`log(size)` added to each key's logits) and the weighted average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

RSchedule = int | Sequence[int]


@dataclass
class Matching:
    """The outcome of bipartite soft matching for one block; applies to any per-token tensor.

    `unmerged` [B, Na - r, 1] indexes the A tokens that stay, `merged` [B, r, 1] the A tokens that
    go, and `partner` [B, r, 1] the B token each of them is merged into.
    """

    protected: int
    unmerged: torch.Tensor
    merged: torch.Tensor
    partner: torch.Tensor

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """Apply the matching to `values` [B, N, C] → [B, N - r, C], combining with `reduce`."""
        channels = values.shape[-1]
        kept, mergeable = values[:, : self.protected], values[:, self.protected :]
        set_a, set_b = mergeable[:, ::2], mergeable[:, 1::2]
        stay = set_a.gather(1, self.unmerged.expand(-1, -1, channels))
        go = set_a.gather(1, self.merged.expand(-1, -1, channels))
        set_b = set_b.scatter_reduce(1, self.partner.expand(-1, -1, channels), go, reduce=reduce)
        return torch.cat([kept, stay, set_b], dim=1)


def bipartite_soft_matching(keys: torch.Tensor, r: int, protected: int) -> Matching:
    """Match `r` tokens of set A to their most similar token of set B.

    keys: [B, N, C] similarity metric per token (attention keys averaged over heads).
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
    return Matching(protected, unmerged, merged, partner.unsqueeze(-1).gather(1, merged))


class Merges(Protocol):
    """Anything that merges per-token values the way a Matching does (also packed matchings)."""

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor: ...


def merge_tokens(
    matching: Merges, tokens: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average of merged tokens.

    tokens: [B, N, D], sizes: [B, N, 1] → tokens [B, N - r, D], sizes [B, N - r, 1].
    """
    weighted = matching.merge(tokens * sizes)
    sizes = matching.merge(sizes)
    return weighted / sizes, sizes


def max_merge(num_tokens: int, protected: int) -> int:
    """The most tokens one block can merge: half of the mergeable tokens (the size of set B)."""
    return max(num_tokens - protected, 0) // 2


def resolve_schedule(r: RSchedule, depth: int, schedule: str = "constant") -> list[int]:
    """Tokens to merge in each of `depth` blocks.

    r: one int for every block, or a list with one int per block.
    schedule: with an int r, `constant` (r in every block) or `decreasing` (linear from 2r in the
        first block to 0 in the last, rounded so that the total stays r·depth).
    """
    if isinstance(r, int):
        if r < 0:
            raise ValueError(f"r must be >= 0, got {r}")
        if schedule == "constant":
            return [r] * depth
        if schedule == "decreasing":
            return _decreasing(r, depth)
        raise ValueError(f"unknown r schedule {schedule!r}: use 'constant' or 'decreasing'")
    per_block = [int(v) for v in r]
    if len(per_block) != depth:
        raise ValueError(f"an r list needs one value per block ({depth}), got {len(per_block)}")
    if any(v < 0 for v in per_block):
        raise ValueError(f"r values must be >= 0, got {per_block}")
    return per_block


def _decreasing(r: int, depth: int) -> list[int]:
    """Linear ramp 2r → 0 over `depth` blocks, largest-remainder rounded to total r·depth."""
    if depth == 1:
        return [r]
    ideal = [2 * r * (1 - i / (depth - 1)) for i in range(depth)]
    values = [int(v) for v in ideal]
    missing = r * depth - sum(values)
    by_remainder = sorted(range(depth), key=lambda i: ideal[i] - values[i], reverse=True)
    for i in by_remainder[:missing]:
        values[i] += 1
    return values


def tokens_per_block(num_tokens: int, schedule: Sequence[int], protected: int) -> list[int]:
    """Token count after each block for `num_tokens` input tokens, the per-block cap applied."""
    counts = []
    for r in schedule:
        num_tokens -= min(r, max_merge(num_tokens, protected))
        counts.append(num_tokens)
    return counts


def first_capped_block(
    num_tokens: int, schedule: Sequence[int], protected: int
) -> tuple[int, int] | None:
    """The first block (0-based) whose r exceeds what it can merge, and what it can merge
    there; None when every block merges its full r."""
    for block, r in enumerate(schedule):
        cap = max_merge(num_tokens, protected)
        if r > cap:
            return block, cap
        num_tokens -= r
    return None


def capped_merging_note(num_patches: int, depth: int, r: RSchedule,
                        schedule: str = "constant", protected: int = 2) -> str | None:
    """A one-line note when `r` asks for more merging than `num_patches` patches (+ the
    `protected` CLS and DIST tokens) allow over `depth` blocks: those blocks merge what they
    can, which no result shows. None when every block merges its full r."""
    capped = first_capped_block(num_patches + protected, resolve_schedule(r, depth, schedule),
                                protected)
    if capped is None:
        return None
    block, cap = capped
    return (f"note: r={r} is more than {num_patches} patches allow: block {block + 1} merges "
            f"only {cap} tokens (half of those left), and so on; the merging is capped")
