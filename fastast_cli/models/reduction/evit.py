"""EViT: keep the tokens CLS and DIST attend to most, fuse the rest into one token.

Liang et al., "Not All Patches are What You Need: Expediting Vision Transformers via Token
Reorganizations", ICLR 2022 (arXiv 2202.07800), §3 "Token reorganization" (attentive token
identification, inattentive token fusion); applied to AST by Lee & Lee (arXiv 2504.01690).

Per block and clip, after the attention residual:

1. attentiveness a_j = ½ (mean_h A_h[CLS, j] + mean_h A_h[DIST, j]): the two prefix query rows
   of this block's softmax attention, averaged over heads, with the same additive bias the
   block used (proportional attention's log size, the packed rows' block-diagonal mask). SDPA
   returns no weights, so the two rows are recomputed from the block's queries and keys
   (O(2·N·D) per block). Sizes enter through the bias only, never twice.
2. the T − r − 1 mergeable tokens with the highest a_j stay; the other r + 1 are fused into one
   token, so exactly r tokens go (as every method here, for equal cost);
3. the fused token is the attention-weighted mean Σ a_j x_j / Σ a_j over the fused tokens; its
   size is their sizes' sum, its source their union. Deviation from the official code, which
   uses the un-normalised sum Σ a_j x_j: the mean keeps the token on the scale of the others
   when the method is applied to a model trained without it.

The paper prunes at three blocks with a keep rate; here the r schedule says how many tokens go
per block, as for every method. The fused token sits where its first member sat.
"""

from __future__ import annotations

import contextlib
import math

import torch

from fastast_cli.models.reduction.layout import ClipView
from fastast_cli.models.reduction.matching import ReductionStep, Regrouping, regroup


def float32_products(device_type: str) -> contextlib.AbstractContextManager:
    """Matrix products in float32 also under AMP, which runs `bmm` in half precision (the
    ranking of tokens by attention is made from them); no context at all outside AMP."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def prefix_attention(step: ReductionStep, view: ClipView) -> torch.Tensor:
    """Attention of CLS and DIST to every mergeable token, averaged over heads and the two
    queries: [K, T] (each of the two softmax rows sums to one over all keys of the clip)."""
    query = step.query.transpose(1, 2)[view.row[:, None], view.prefix_slot]  # [K, P, H, hd]
    key = view.clip_rows(step.key)  # [K, H, L, hd]
    with float32_products(query.device.type):
        logits = torch.stack([  # [K, H, P, L]; one product per head reads the keys in place
            torch.bmm(query[:, :, head].float(), key[:, head].float().transpose(-1, -2))
            for head in range(key.shape[1])], dim=1)
    logits = logits / math.sqrt(query.shape[-1])
    if step.bias is not None:
        rows, length = step.key.shape[0], step.key.shape[2]
        bias = step.bias.expand(rows, 1, length, length)[:, 0]  # [R, L, L]
        logits = logits + bias[view.row[:, None], view.prefix_slot][:, None].float()
    weights = logits.softmax(dim=-1).mean(dim=(1, 2))  # [K, L]
    return weights.gather(1, view.slot)


class EViT:
    """EViT's attentive-token selection with inattentive-token fusion."""

    name = "evit"

    def match(self, step: ReductionStep) -> Regrouping:
        view = step.clip_view()
        attention = prefix_attention(step, view)  # [K, T]
        rank = view.rank(attention)
        fuses = (view.remove > 0)[:, None]  # a clip that loses nothing fuses nothing
        fused = view.valid & fuses & (rank >= (view.counts - view.remove - 1)[:, None])  # r + 1
        first = fused & (fused.long().cumsum(dim=1) == 1)  # where the fused token sits
        position = torch.arange(rank.shape[1], device=rank.device).expand_as(rank)
        target = first.long().argmax(dim=1, keepdim=True).expand_as(rank)
        partner = torch.where(fused, target, position)
        weights = torch.where(fused, attention, 1.0)  # [K, T] float32
        return regroup(view, ~fused | first, partner, weights)
