"""What the fixed AST and the ElasticAST share: blocks, final norm, head, init and labels.

Subclasses add their patch embedding and positions, then call `_build_trunk` (blocks, norm,
head: parameter names `blocks.N.*`, `norm`, `mlp_head`, as in AST and timm) and
`_init_weights` with their embedding parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from fastast_cli.models.layers import Block
from fastast_cli.models.reduction.base import TokenReduction
from fastast_cli.models.reduction.registry import make_method, method_options
from fastast_cli.models.reduction.schedule import RSchedule
from fastast_cli.models.reduction.settings import MergeSettings
from fastast_cli.models.token_state import PackedState, TokenState

if TYPE_CHECKING:
    from fastast_cli.models.ast import ASTConfig

Model = TypeVar("Model", bound="TokenClassifier")


class TokenClassifier(nn.Module):
    """A transformer classifier with token reduction in every block."""

    merges_tokens = True  # has `merging` and `set_r`
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
        self._methods: dict[str, TokenReduction] = {}  # instances by method and options
        self.merging = MergeSettings()  # no merging, proportional attention on
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

    # --- merging: one record (models/reduction/settings.py), read and written whole ----------

    @property
    def merging(self) -> MergeSettings:
        """How this model reduces tokens: the one record in effect."""
        return self._merging

    @merging.setter
    def merging(self, settings: MergeSettings) -> None:
        """Apply `settings` whole. The per-block r (`resolve_r`) and the method instance are
        derived from it; instances are kept per method and options, so swapping records back
        and forth rebuilds nothing. Raises ValueError (an unknown method or option, a bad r or
        schedule; TypeError for an r of the wrong kind) before anything changes."""
        plan = self.resolve_r(settings)
        key = _method_key(settings)
        if key not in self._methods:
            self._methods[key] = make_method(settings.method, settings.method_options)
        self._merging, self._plan, self._reduction = settings, plan, self._methods[key]

    def set_r(
        self: Model,
        r: RSchedule | float,
        schedule: str = "constant",
        proportional_attention: bool | None = None,
        method: str | None = None,
        method_options: Mapping[str, Any] | None = None,
    ) -> Model:
        """Set token reduction: `merging` with these values (the rest kept); returns the model,
        so `load_model(p).set_r(8)` reads naturally.

        r: tokens each clip loses per block, an int or one int per block (r = 0: no merging);
            ElasticAST also takes a float in [0, 1): round(r × a clip's patch tokens) per block.
            Values above half a block's mergeable tokens are capped at run time.
        schedule: `constant`, or `decreasing` (2r → 0, same total).
        proportional_attention, method: None keeps the model's (a loaded checkpoint's). method:
            one of `reduction.METHODS` (tome, pitome, evit, tofu, random), each removing exactly
            r tokens per block. method_options: its options (PiToMe: margin_start,
            margin_slope, alpha; ToFu: switch; random: seed); None: the method's in use, or
            another method's defaults.
        """
        settings = self.merging.overridden(r, schedule, proportional_attention, method)
        if method_options is not None:
            settings = replace(settings, method_options=dict(method_options))
        self.merging = settings
        return self

    def resolve_r(self, settings: MergeSettings) -> list[int]:
        """The r of each block that `settings` ask for (validating r and the schedule)."""
        raise NotImplementedError

    @property
    def r_schedule(self) -> list[int]:
        """Tokens merged in each block (from `merging`; ElasticAST's fraction: zeros)."""
        return list(self._plan)

    @property
    def proportional_attention(self) -> bool:
        """Whether attention adds log(size) for merged keys (from `merging`)."""
        return self._merging.proportional_attention

    @property
    def reduction_method(self) -> str:
        """Name of the token-reduction method in use (from `merging`)."""
        return self._merging.method

    @property
    def reduction_options(self) -> dict[str, Any]:
        """Options of the method in use, its defaults included (PiToMe's margins, ToFu's
        switch, random's seed; {} for tome and evit)."""
        return method_options(self._reduction)

    @property
    def merge_settings(self) -> MergeSettings:
        """`merging` (the name scripts used first)."""
        return self._merging

    @property
    def reduction(self) -> TokenReduction:
        """The method instance in use (derived from `merging`)."""
        return self._reduction

    @reduction.setter
    def reduction(self, method: TokenReduction) -> None:
        """Plug a method instance, e.g. one the registry does not name (tests, experiments):
        `merging` then names it, with its options."""
        options = method_options(method) or None
        settings = replace(self._merging, method=method.name, method_options=options)
        self._methods[_method_key(settings)] = method
        self._merging, self._reduction = settings, method

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
        state.reduction, state.depth = self._reduction, len(self.blocks)
        for index, (block, r) in enumerate(zip(self.blocks, plan, strict=True)):
            state.block = index
            tokens = block(tokens, state, r, self.proportional_attention)
        self.last_state = None if self.training else state
        return tokens


def _method_key(settings: MergeSettings) -> str:
    """The key of a record's method instance: its name and options."""
    return repr((settings.method, sorted((settings.method_options or {}).items())))
