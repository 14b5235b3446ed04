"""FLOPs of one forward pass, counted by `torch.utils.flop_counter` on the real ops executed.

PyTorch's counter knows the CUDA fused-attention kernels but not the CPU one
(`_scaled_dot_product_flash_attention_for_cpu`), so that op is registered here with the same
formula: two matrix products of [N_q × d] by [d × N_k], 2 FLOPs per multiply-add.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of softmax(Q Kᵀ) V for query [B, H, Nq, d], key [B, H, Nk, d], value [B, H, Nk, dv]."""
    batch, heads, n_query, dim = query_shape
    n_key, dim_value = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * n_query * n_key * (dim + dim_value)


_EXTRA_FORMULAS = {}
if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu] = _attention_flops


def count_flops(model: nn.Module, inputs: torch.Tensor) -> int:
    """Total FLOPs of `model(inputs)` (the whole batch), counted without gradients."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        model(inputs)
    return counter.get_total_flops()
