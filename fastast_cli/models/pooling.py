"""Masked attention pooling of packed clips (ElasticAST, Feng et al. 2024, Sec. 2).

One learned query attends to the tokens of one clip and nothing else; every clip of a packed
batch is pooled with the same query:

    tokens [N, D] (flat, clips packed in rows by a `Layout`)
        → keys, values [R, H, L, hd] per row; queries [R, H, Q, hd]: one slot per clip in the row
        → SDPA with a mask that lets slot j see only the j-th clip's tokens of its row
        → [num_clips, D] → proj

Padding and the other clips of a row get -inf, so they add exactly nothing to a clip's pooled
vector. With token merging, `log_sizes` adds log(size) per key (ToMe's proportional attention),
so a merged token weighs as the patches it holds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastast_cli.models.reduction.layout import Layout, device_tensor


class AttentionPool(nn.Module):
    """A learned query [D] attending to each clip's tokens: flat [N, D] → [num_clips, D]."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.zeros(dim))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, tokens: torch.Tensor, layout: Layout, log_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """tokens [N, D] laid out by `layout` → one vector per clip [K, D].

        log_sizes: [N, 1] log of each token's size (proportional attention), or None.
        """
        dim, heads = tokens.shape[-1], self.num_heads
        kv = layout.to_rows(self.kv(tokens))  # [R, L, 2D]
        rows, length = kv.shape[:2]
        key, value = kv.reshape(rows, length, 2, heads, dim // heads).permute(2, 0, 3, 1, 4)
        slot, clip_at = clip_slots(layout)  # [K], [R, Q]
        query = self.q(self.query).reshape(1, heads, 1, dim // heads)
        query = query.expand(rows, heads, clip_at.shape[1], dim // heads)  # [R, H, Q, hd]
        mask = pooling_mask(layout, clip_at, log_sizes, key.dtype)  # [R, 1, Q, L]
        pooled = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        pooled = pooled.transpose(1, 2).reshape(rows, clip_at.shape[1], dim)  # [R, Q, D]
        return self.proj(pooled[layout.row_tensor, slot])  # [K, D]


def clip_slots(layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Each clip's query slot in its row [K] (its rank among the row's clips), and the clip in
    every slot [R, Q] (-1 where a row holds fewer clips than the fullest)."""
    taken = [0] * layout.num_rows
    slots = []
    for row in layout.rows:
        slots.append(taken[row])
        taken[row] += 1
    slot = device_tensor(slots, layout.device)
    clip_at = torch.full((layout.num_rows, max(taken, default=0)), -1, device=layout.device)
    clip_at[layout.row_tensor, slot] = torch.arange(layout.num_clips, device=layout.device)
    return slot, clip_at


def pooling_mask(
    layout: Layout, clip_at: torch.Tensor, log_sizes: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """Additive mask [R, 1, Q, L]: 0 (plus log size) where the key is a token of the slot's clip,
    -inf elsewhere; an empty slot sees its whole row (its output is never read)."""
    own = layout.segment[:, None, :] == clip_at[:, :, None]  # [R, Q, L]
    own |= (clip_at < 0)[:, :, None]
    mask = torch.zeros(own.shape, device=layout.device, dtype=dtype)
    mask = mask.masked_fill(~own, float("-inf"))
    if log_sizes is not None:
        mask = mask + layout.to_rows(log_sizes.to(dtype))[..., 0][:, None, :]
    return mask[:, None]
