"""The token-reduction interface: what a method sees in a block, and what it returns.

A method (ToMe, PiToMe, EViT, ToFu, random) is one class with a `name` and
`match(step) -> Merges`, written once for both layouts:

- dense: tokens [B, N, D], one clip per row (the fixed AST);
- packed: flat tokens [N, D] of clips of any length, packed into rows by a `Layout`
  (ElasticAST); a matching there must never cross clips.

The block computes attention and hands the method a `ReductionStep` (tokens, per-head queries
and keys in attention rows, the token state, r per clip already capped, the block index and
depth). The method never asks which layout it runs in: the token state (`step.state`) answers
every layout-dependent question through its primitives,

- `step.state.bipartite_matching(keys, step.r, step.protected)`: ToMe's matching inside every
  clip (ToMe, ToFu);
- `step.state.clip_view(step.tokens, step.r, step.protected)`: the mergeable tokens of every
  clip as padded rows [K, T] (`groups.ClipView`), on which a method scores, ranks and picks
  partners with plain batched tensor code and answers with `view.regroup(keep, partner)`
  (PiToMe, EViT, random);
- `step.mean_keys()`: the keys averaged over heads, per token.

The state applies the returned matching with `combine_tokens`, which also updates sizes, sources
and the layout. The combine is the size-weighted average (`merge_tokens`) unless the matching
brings its own (`CombiningMerges`: EViT's attention-weighted fusion, ToFu's pruning and
norm-preserving merge). To add a method: one class in its own module here, using these
primitives, registered by name in `registry.METHODS`; tests/test_methods.py then runs it in both
layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from fastast_cli.models.token_state import PackedState, TokenState


class Merges(Protocol):
    """A matching: maps any per-token tensor to the reduced sequence, combining with `reduce`.

    Dense: values [B, N, C] → [B, N - r, C]; packed: flat values [N, C] → [N', C].
    """

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor: ...


class CombiningMerges(Merges, Protocol):
    """A matching that combines the tokens of a group its own way (not the size-weighted mean):
    `combine(tokens, sizes)` → the reduced tokens and sizes, shapes as `merge_tokens`."""

    def combine(
        self, tokens: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class ReductionStep:
    """Everything a reduction method may use in one block.

    tokens: the block's tokens after attention, dense [B, N, D] or packed flat [N, D].
    query, key: per-head queries and keys as attention saw them, rows [R, H, L, hd]
        (dense: R = B, L = N; packed: `state.layout` says which slot holds which token).
    state: the token state, `TokenState` (dense) or `PackedState` (packed): its
        `bipartite_matching` and `clip_view` are the layout-dependent primitives.
    r: tokens each clip loses in this block, already capped (`allowed_merges`): packed, one
        value per clip; dense, one value [r] that every row loses.
    block, depth: index of this block and number of blocks (for depth-dependent methods).
    protected: leading tokens of each clip that are never reduced (CLS and DIST).
    bias: the additive attention mask the block used, broadcastable to [R, 1, L, L] (proportional
        attention's log(size) per key, the block-diagonal mask of packed rows), or None.
    """

    tokens: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    state: TokenState | PackedState
    r: list[int]
    block: int
    depth: int
    protected: int
    bias: torch.Tensor | None = None

    def mean_keys(self) -> torch.Tensor:
        """Keys averaged over heads, per token: dense [B, N, hd], packed flat [N, hd]."""
        return self.state.from_rows(self.key.mean(dim=1))


class TokenReduction(Protocol):
    """A token-reduction method: picks which tokens each clip loses in one block."""

    name: str

    def match(self, step: ReductionStep) -> Merges | CombiningMerges:
        """A matching that removes exactly `step.r[c]` tokens of every clip c (dense: r[0] of
        every row), built with the state's primitives (never a branch on the layout)."""
        ...


def merge_tokens(
    matching: Merges, tokens: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average of merged tokens (ToMe, Bolya et al. 2023, Sec. 3).

    tokens: [B, N, D] or [N, D], sizes: [B, N, 1] or [N, 1] → the reduced tokens and sizes.
    """
    weighted = matching.merge(tokens * sizes)
    sizes = matching.merge(sizes)
    return weighted / sizes, sizes


def combine_tokens(
    matching: Merges | CombiningMerges, tokens: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine each group of `matching` into one token: the matching's own `combine` when it is
    a `CombiningMerges`, else the size-weighted average (`merge_tokens`). Shapes as
    `merge_tokens`."""
    combine = getattr(matching, "combine", None)
    if combine is None:
        return merge_tokens(matching, tokens, sizes)
    return combine(tokens, sizes)
