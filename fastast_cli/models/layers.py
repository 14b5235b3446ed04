"""The transformer block of both layouts: attention (one SDPA call), merge step, MLP.

The fixed AST and the ElasticAST run the same `Block`; the token state (`token_state.py`) says
how tokens become attention rows, which mask applies and how the merge step matches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastast_cli.models.token_state import PackedState, TokenState


class Attention(nn.Module):
    """Multi-head self-attention through fused SDPA on the rows the token state lays out."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, tokens: torch.Tensor, state: TokenState | PackedState, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens [B, N, D] or flat [N, D] → (output, same shape; query, key [R, H, L, hd]).

        Per-token projections run on the tokens as they are; only SDPA sees rows [R, L, ·].
        bias: additive mask broadcastable to [R, H, L, L], or None.
        """
        dim = tokens.shape[-1]
        qkv = state.to_rows(self.qkv(tokens))  # [R, L, 3D]
        rows, length = qkv.shape[:2]
        qkv = qkv.reshape(rows, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [R, H, L, hd]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        out = state.from_rows(out.transpose(1, 2).reshape(rows, length, dim))
        return self.proj(out), query, key


class Mlp(nn.Module):
    """Two-layer GELU MLP of a transformer block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(tokens)))


class Block(nn.Module):
    """Pre-norm ViT block with token reduction between attention and MLP (FastAST Fig. 1)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))

    def forward(
        self,
        tokens: torch.Tensor,
        state: TokenState | PackedState,
        r: int | list[int],
        proportional: bool,
    ) -> torch.Tensor:
        """tokens [B, N, D] or flat [N, D] → the same, r tokens fewer per clip (capped).

        r: tokens every clip loses (an int), or one value per clip (packed rows).
        """
        bias = state.attention_bias(tokens.dtype, proportional)
        attended, query, key = self.attn(self.norm1(tokens), state, bias)
        tokens = state.reduce(tokens + attended, query, key, r, bias)  # the merge step
        return tokens + self.mlp(self.norm2(tokens))
