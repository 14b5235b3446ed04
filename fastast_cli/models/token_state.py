"""What travels with the tokens from block to block, for both layouts.

The token state owns everything that differs between the dense layout (the fixed AST: tokens
[B, N, D], one clip per row) and the packed layout (ElasticAST: flat tokens [N, D] of clips of
any length, packed into rows by a `Layout`):

- how tokens become attention rows (`to_rows` / `from_rows`: identity when dense);
- the attention mask (`attention_bias`): none for dense rows, block-diagonal for packed rows,
  plus the proportional-attention log(size) per key;
- how many tokens each clip may lose (`allowed_r`, through the one cap `allowed_merges`);
- the matching primitives a reduction method builds on, so that a method is written once and
  never asks which layout it runs in: `bipartite_matching` (ToMe's matching per row when dense,
  per clip inside its row when packed) and `clip_view` (the mergeable tokens of every clip as
  padded rows, `reduction.groups.ClipView`);
- the merge step (`reduce`): ask the reduction method for a matching, then merge tokens, sizes,
  sources and the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastast_cli.models.packing import Layout, block_diagonal_bias
from fastast_cli.models.reduction.base import (
    Merges,
    ReductionStep,
    TokenReduction,
    combine_tokens,
)
from fastast_cli.models.reduction.groups import ClipView
from fastast_cli.models.reduction.schedule import NUM_PREFIX_TOKENS, allowed_merges
from fastast_cli.models.reduction.tome import (
    Matching,
    PackedMatching,
    bipartite_soft_matching,
    packed_bipartite_matching,
)


class MergeStep:
    """The merge step shared by both token states (the reduction's place in every block)."""

    reduction: TokenReduction | None
    block: int
    depth: int

    def allowed_r(self, tokens: torch.Tensor, r: int | list[int]) -> list[int]:
        """Tokens each clip loses in this block, capped."""
        raise NotImplementedError

    def merge(self, matching: Merges, tokens: torch.Tensor) -> torch.Tensor:
        """Apply `matching` to the tokens and to what the state carries."""
        raise NotImplementedError

    def bipartite_matching(
        self, keys: torch.Tensor, r: list[int], protected: int
    ) -> Matching | PackedMatching:
        """ToMe's bipartite soft matching inside every clip: clip c loses r[c] tokens.

        keys: per-token similarity metric, dense [B, N, C] or packed flat [N, C]; r: as
        `ReductionStep.r`; protected: leading tokens of each clip that never merge.
        """
        raise NotImplementedError

    def clip_view(self, tokens: torch.Tensor, r: list[int], protected: int) -> ClipView:
        """The mergeable tokens of every clip as padded rows [K, T] (`ClipView`).

        tokens: dense [B, N, D] or packed flat [N, D]; r, protected: as `bipartite_matching`.
        """
        raise NotImplementedError

    def reduce(
        self,
        tokens: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor,
        r: int | list[int],
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Remove r tokens per clip (capped) with the state's reduction method.

        query, key: per-head attention rows [R, H, L, hd] of this block; bias: its additive
        attention mask (`attention_bias`), or None.
        """
        allowed = self.allowed_r(tokens, r)
        if not any(allowed):
            return tokens
        step = ReductionStep(tokens, query, key, self, allowed, self.block, self.depth,
                             NUM_PREFIX_TOKENS, bias)
        if self.reduction is None:
            raise ValueError("the token state has no reduction method to merge with")
        return self.merge(self.reduction.match(step), tokens)


@dataclass
class TokenState(MergeStep):
    """Dense rows [B, N, D], one clip per row: no mask, no gather.

    sizes: [B, N, 1] original patches per token (None until the first merge: all ones).
    source: [B, N, N0] 0/1 map from tokens to the original tokens they cover (only if tracked).
    """

    sizes: torch.Tensor | None = None
    source: torch.Tensor | None = None
    reduction: TokenReduction | None = None  # set by the model (`run_blocks`)
    block: int = 0
    depth: int = 0
    layout: None = None  # dense: rows are the batch

    def to_rows(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return rows

    def attention_bias(self, dtype: torch.dtype, enabled: bool) -> torch.Tensor | None:
        """Proportional attention: log(size) per key as an additive SDPA mask [B, 1, 1, N]."""
        if not enabled or self.sizes is None:
            return None
        return self.sizes.log().to(dtype)[:, None, None, :, 0]

    def allowed_r(self, tokens: torch.Tensor, r: int | list[int]) -> list[int]:
        """Every row loses the same r, capped for N tokens: one value for all rows, [r].

        (Not one per row: the batch size stays symbolic when the model is exported.)
        """
        requested = r if isinstance(r, int) else r[0]
        return [allowed_merges(tokens.shape[1], requested, NUM_PREFIX_TOKENS)]

    def merge(self, matching: Merges, tokens: torch.Tensor) -> torch.Tensor:
        """Merge `tokens` [B, N, D] → [B, N - r, D] and update sizes and sources to match."""
        if self.sizes is None:
            self.sizes = tokens.new_ones(tokens.shape[0], tokens.shape[1], 1)
        tokens, self.sizes = combine_tokens(matching, tokens, self.sizes)
        if self.source is not None:
            self.source = matching.merge(self.source, reduce="amax")
        return tokens

    def bipartite_matching(self, keys: torch.Tensor, r: list[int], protected: int) -> Matching:
        """One matching per row, keys [B, N, C]: every row loses r[0]."""
        return bipartite_soft_matching(keys, r[0], protected)

    def clip_view(self, tokens: torch.Tensor, r: list[int], protected: int) -> ClipView:
        """Every row one clip: K = B, T = N - protected, no padding."""
        return ClipView.of_rows(tokens, r, protected)


@dataclass
class PackedState(MergeStep):
    """Flat tokens [N, D] of clips packed into rows by `layout` (which shrinks with merges).

    sizes: [N, 1] original patches per token (None until the first merge: all ones).
    """

    layout: Layout
    sizes: torch.Tensor | None = None
    reduction: TokenReduction | None = None  # set by the model (`run_blocks`)
    block: int = 0
    depth: int = 0

    def to_rows(self, values: torch.Tensor) -> torch.Tensor:
        """Flat [N, C] → rows [R, L, C]."""
        return self.layout.to_rows(values)

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows [R, L, C] → flat [N, C]."""
        return self.layout.from_rows(rows)

    def attention_bias(self, dtype: torch.dtype, proportional: bool) -> torch.Tensor | None:
        """The block-diagonal SDPA mask, with log(size) per key when `proportional`."""
        log_sizes = self.sizes.log() if proportional and self.sizes is not None else None
        return block_diagonal_bias(self.layout, log_sizes, dtype)

    def allowed_r(self, tokens: torch.Tensor, r: int | list[int]) -> list[int]:
        """r per clip (an int: every clip alike), each capped for its clip's tokens."""
        per_clip = [r] * self.layout.num_clips if isinstance(r, int) else r
        return [allowed_merges(count, remove, NUM_PREFIX_TOKENS)
                for count, remove in zip(self.layout.counts, per_clip, strict=True)]

    def merge(self, matching: Merges, tokens: torch.Tensor) -> torch.Tensor:
        """Merge flat `tokens` [N, D] → [N', D] and update sizes and layout to match."""
        if self.sizes is None:
            self.sizes = tokens.new_ones(tokens.shape[0], 1)
        tokens, self.sizes = combine_tokens(matching, tokens, self.sizes)
        self.layout = matching.layout
        return tokens

    def bipartite_matching(
        self, keys: torch.Tensor, r: list[int], protected: int
    ) -> PackedMatching:
        """One matching per clip inside its row, flat keys [N, C]: clip c loses r[c]."""
        return packed_bipartite_matching(keys, self.layout, r, protected)

    def clip_view(self, tokens: torch.Tensor, r: list[int], protected: int) -> ClipView:
        """The clips of `layout`, padded to the longest clip's mergeable tokens."""
        return ClipView.of_clips(tokens, self.layout, r, protected)
