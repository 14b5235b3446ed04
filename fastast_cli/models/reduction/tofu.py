"""ToFu (Token Fusion): prune-like merging in early blocks, norm-preserving merging later.

Kim et al., "Token Fusion: Bridging the Gap between Token Pruning and Token Merging", WACV 2024
(arXiv 2312.01026), §3. The matching is ToMe's bipartite soft matching, unchanged; only how a
group becomes one token depends on depth:

- early blocks (index ≤ `switch`, default L // 2 as in the public re-implementations): prune:
  the r matched A tokens are dropped and their B partners keep their own values (early blocks
  respond non-linearly to averaged inputs, so a near-duplicate is better dropped). The partner's
  size still counts the dropped tokens, so proportional attention sees one key standing for
  both;
- later blocks: MLERP merge (§3, a multi-token SLERP): the group's size-weighted mean μ, rescaled
  to the largest norm among its members, x = μ / ‖μ‖ · max_i ‖x_i‖, which keeps the norm
  distribution the next layers expect (a plain mean shrinks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastast_cli.models.reduction.matching import (
    CombiningMatching,
    Matching,
    PackedMatching,
    ReductionStep,
)
from fastast_cli.models.reduction.tome import bipartite_matching


def mlerp(
    matching: Matching | PackedMatching, tokens: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ToFu's MLERP: each merged group → its size-weighted mean with the norm of its largest
    member; tokens that merge with nothing stay exactly as they are.

    tokens: [B, N, D] or [N, D], sizes: [B, N, 1] or [N, 1] → the reduced tokens and sizes.
    Only the members of merged groups are measured (a slot's own token and those that join
    it); every slot is then scaled by one factor, 1 where nothing joined.
    """
    mean, merged_sizes = matching.combine(tokens, sizes)
    stay, merged, into = matching.flat_index(tokens.shape[-2])
    rows = tokens.reshape(-1, tokens.shape[-1])  # [T, D]
    members = torch.cat([rows.index_select(0, stay.index_select(0, into)),
                         rows.index_select(0, merged)])  # [2M, D] each join's slot and joiner
    largest = mean.new_zeros(stay.shape[0]).scatter_reduce_(  # [T'] 0 where nothing joined
        0, into.repeat(2), members.norm(dim=-1), reduce="amax")
    norm = mean.norm(dim=-1).flatten().clamp_min(1e-6)  # [T']
    factor = torch.where(largest > 0, largest / norm, 1.0)
    return mean * factor.view(*mean.shape[:-1], 1), merged_sizes


@dataclass
class ToFuMatching(CombiningMatching):
    """ToMe's matching of one block, combined by pruning (`prunes`) or by MLERP."""

    matching: Matching | PackedMatching
    prunes: bool

    def combine(
        self, tokens: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prune: every slot keeps its own token, sizes add up; else MLERP."""
        if self.prunes:
            return self.matching.keep(tokens), self.matching.merge(sizes)
        return mlerp(self.matching, tokens, sizes)


class ToFu:
    """ToMe's matching with ToFu's combine: prune in blocks ≤ `switch` (None: depth // 2),
    MLERP after."""

    name = "tofu"

    def __init__(self, switch: int | None = None) -> None:
        self.switch = switch

    @property
    def options(self) -> dict[str, int | None]:
        """What `make_method` needs to rebuild this method (checkpoints, recipes)."""
        return {"switch": self.switch}

    def prunes(self, block: int, depth: int) -> bool:
        """Whether block `block` of `depth` prunes (else it merges with MLERP)."""
        return block <= (depth // 2 if self.switch is None else self.switch)

    def match(self, step: ReductionStep) -> ToFuMatching:
        matching = bipartite_matching(step, step.summed_keys())
        return ToFuMatching(matching, self.prunes(step.block, step.depth))
