"""What the fixed AST and the ElasticAST share: blocks, final norm, head, init and labels.

Subclasses add their patch embedding and positions, then call `_build_trunk` (blocks, norm,
head: parameter names `blocks.N.*`, `norm`, `mlp_head`, as in AST and timm) and
`_init_weights` with their embedding parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fastast_cli.models.layers import Block
from fastast_cli.models.reduction.base import TokenReduction
from fastast_cli.models.reduction.registry import make_method, method_options
from fastast_cli.models.reduction.tome import ToMe
from fastast_cli.models.token_state import PackedState, TokenState

if TYPE_CHECKING:
    from fastast_cli.models.ast import ASTConfig


class TokenClassifier(nn.Module):
    """A transformer classifier with token reduction in every block."""

    merges_tokens = True  # has `set_r`
    head_prefixes = ("mlp_head.",)  # the tensors a new class count re-creates
    config: ASTConfig

    def _build_trunk(self, config: ASTConfig) -> None:
        """The blocks, the final norm and the classification head."""
        dim = config.embed_dim
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, config.layer_norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp_head = nn.Sequential(
            nn.LayerNorm(dim, eps=config.head_eps), nn.Linear(dim, config.num_classes)
        )
        self.r_schedule = [0] * config.depth
        self.proportional_attention = True
        self.reduction: TokenReduction = ToMe()
        self.meta: dict[str, Any] = {}  # normalization stats etc., filled by the loaders

    def _init_weights(self, embeddings: Sequence[nn.Parameter]) -> None:
        """Truncated normal (std 0.02) for the embeddings and every Linear, zero biases."""
        for parameter in embeddings:
            nn.init.trunc_normal_(parameter, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def reduction_method(self) -> str:
        """Name of the token-reduction method in use (`tome`, `pitome`, `evit`, `tofu`,
        `random`)."""
        return self.reduction.name

    @property
    def reduction_options(self) -> dict[str, Any]:
        """Options of the reduction method in use (PiToMe's margins, ToFu's switch, random's
        seed; {} for tome and evit): `set_r(..., method_options=...)` takes them back."""
        return method_options(self.reduction)

    def set_method(self, method: str, options: Mapping[str, Any] | None = None) -> None:
        """Use the reduction method `method` (see `reduction.METHODS`) with its options.

        The method in use is kept (with its options and caches) when it already is `method` and
        no options are given. Raises ValueError for an unknown method or option.
        """
        if method != self.reduction.name or options is not None:
            self.reduction = make_method(method, options)

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def run_blocks(
        self,
        tokens: torch.Tensor,
        state: TokenState | PackedState,
        plan: Sequence[int | Sequence[int]],
    ) -> torch.Tensor:
        """Every block with its r (int, or one per clip); the state goes along.

        In eval mode the final state is kept in `self.last_state` for inspection; in training
        it is not, so no graph outlives a step.
        """
        state.reduction, state.depth = self.reduction, len(self.blocks)
        for index, (block, r) in enumerate(zip(self.blocks, plan, strict=True)):
            state.block = index
            tokens = block(tokens, state, r, self.proportional_attention)
        self.last_state = None if self.training else state
        return tokens
