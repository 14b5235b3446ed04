"""What travels with the tokens from block to block: sizes, sources and the packed layout.

One `TokenState` serves both layouts; its `layout` says which:

- None: dense rows, tokens [B, N, D], one clip per row (the fixed AST): rows need no gather and
  attention no mask;
- a `Layout`: flat tokens [N, D] of clips packed into rows (ElasticAST), which shrinks with every
  merge.

The block asks the state how tokens become attention rows (`to_rows` / `from_rows`), for the
attention mask (`attention_bias`: proportional attention's log(size) per key, block-diagonal when
packed), how many tokens each clip may lose (`allowed_r`, through the one cap
`allowed_merges`), and to apply the method's matching (`apply`: tokens, sizes, sources, layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastast_cli.models.reduction.layout import Layout, block_diagonal_bias
from fastast_cli.models.reduction.matching import TokenMatching
from fastast_cli.models.reduction.schedule import NUM_PREFIX_TOKENS, allowed_merges


@dataclass
class TokenState:
    """The state of the tokens in one forward pass.

    layout: where the flat tokens sit in packed rows; None for dense rows.
    sizes: original patches per token, dense [B, N, 1] or packed [N, 1] (None until the first
        merge: all ones).
    source: 0/1 map from tokens to the original tokens they cover, dense [B, N, N0] or packed
        [N, N0] (only if tracked: set it to the identity before the first block).
    """

    layout: Layout | None = None
    sizes: torch.Tensor | None = None
    source: torch.Tensor | None = None

    def to_rows(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token values → attention rows [R, L, C] (dense: the values themselves)."""
        return values if self.layout is None else self.layout.to_rows(values)

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Attention rows [R, L, C] → per-token values (dense: the rows themselves)."""
        return rows if self.layout is None else self.layout.from_rows(rows)

    def attention_bias(self, dtype: torch.dtype, proportional: bool) -> torch.Tensor | None:
        """The additive SDPA mask: dense, log(size) per key [B, 1, 1, N] when `proportional`
        (else None); packed, the block-diagonal mask [R, 1, L, L] with log(size) per key when
        `proportional` (`block_diagonal_bias`)."""
        if self.layout is None:
            if not proportional or self.sizes is None:
                return None
            return self.sizes.log().to(dtype)[:, None, None, :, 0]
        log_sizes = self.sizes.log() if proportional and self.sizes is not None else None
        return block_diagonal_bias(self.layout, log_sizes, dtype)

    def allowed_r(self, tokens: torch.Tensor, r: int | list[int]) -> list[int]:
        """Tokens each clip loses in this block, capped: `ReductionStep.clip_r`.

        r: an int (every clip alike) or, packed, one value per clip. Dense: one value for all
        rows, [r], capped for N tokens (not one per row: the batch size stays symbolic when the
        model is exported).
        """
        if self.layout is None:
            requested = r if isinstance(r, int) else r[0]
            return [allowed_merges(tokens.shape[1], requested, NUM_PREFIX_TOKENS)]
        per_clip = [r] * self.layout.num_clips if isinstance(r, int) else r
        return [allowed_merges(count, remove, NUM_PREFIX_TOKENS)
                for count, remove in zip(self.layout.counts, per_clip, strict=True)]

    def apply(self, matching: TokenMatching, tokens: torch.Tensor) -> torch.Tensor:
        """Merge `tokens` (dense [B, N, D] → [B, N - r, D], packed [N, D] → [N', D]) by
        `matching`'s combine, and update sizes, sources and layout to match."""
        if self.sizes is None:
            self.sizes = tokens.new_ones(*tokens.shape[:-1], 1)
        tokens, self.sizes = matching.combine(tokens, self.sizes)
        if self.source is not None:
            self.source = matching.merge(self.source, reduce="amax")
        if self.layout is not None:
            self.layout = matching.layout
        return tokens
