"""The transformer trunk of both models: attention (one SDPA call), the merge step, MLP, head.

The fixed AST (dense rows [B, N, D]) and the ElasticAST (flat tokens [N, D] of packed clips) run
the same `Block`, pre-norm as in timm's `vision_transformer.py`, with token reduction between
attention and MLP (FastAST Fig. 1):

    tokens → + attention(norm1(tokens)) → merge step → + mlp(norm2(tokens))

What travels with the tokens from block to block is one `TokenState` (sizes, sources, and the
packed `Layout`, None for dense rows): it says how tokens become attention rows, which mask
applies, how many tokens each clip may lose (the one cap `allowed_merges`) and applies a
matching to tokens, sizes, sources and layout.

A merge reads in one direction, three files: `Block.forward` (here) hands the reduction method
(`reduction/tome.py`, ...) a `ReductionStep`; the method returns a matching
(`reduction/matching.py`), which the state applies here with the matching's `combine`.
`TokenClassifier` holds what both models share: blocks, final norm, head, init, labels and the
merging record (`model.merging`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from fastast_cli.models.reduction import make_method, method_options
from fastast_cli.models.reduction.layout import Layout, block_diagonal_bias
from fastast_cli.models.reduction.matching import ReductionMethod, ReductionStep, TokenMatching
from fastast_cli.models.reduction.schedule import NUM_PREFIX_TOKENS, RSchedule, allowed_merges
from fastast_cli.models.reduction.settings import MergeSettings


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


class Attention(nn.Module):
    """Multi-head self-attention through fused SDPA on the rows the token state lays out."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, tokens: torch.Tensor, state: TokenState, bias: torch.Tensor | None
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
    """Pre-norm ViT block `index` of `depth`, with token reduction between attention and MLP."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float,
        index: int, depth: int,
    ) -> None:
        super().__init__()
        self.index, self.depth = index, depth
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))

    def forward(
        self,
        tokens: torch.Tensor,
        state: TokenState,
        method: ReductionMethod,
        r: int | list[int],
        proportional: bool,
    ) -> torch.Tensor:
        """tokens [B, N, D] or flat [N, D] → the same, r tokens fewer per clip (capped).

        method: the token-reduction method; r: tokens every clip loses (an int), or one value
        per clip (packed rows); proportional: add log(size) per key to the attention logits.
        """
        bias = state.attention_bias(tokens.dtype, proportional)
        attended, query, key = self.attn(self.norm1(tokens), state, bias)
        tokens = tokens + attended
        clip_r = state.allowed_r(tokens, r)
        if any(clip_r):  # the merge step
            step = ReductionStep(tokens, query, key, state.layout, clip_r, self.index,
                                 self.depth, NUM_PREFIX_TOKENS, bias)
            tokens = state.apply(method.match(step), tokens)
        return tokens + self.mlp(self.norm2(tokens))


class TrunkConfig(Protocol):
    """What the trunk is built from: the fields of `ASTConfig` (and `ElasticConfig`) it reads."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    layer_norm_eps: float
    num_classes: int
    labels: list[str]

    @property
    def head_eps(self) -> float: ...


Model = TypeVar("Model", bound="TokenClassifier")


class TokenClassifier(nn.Module):
    """A transformer classifier with token reduction in every block."""

    merges_tokens = True  # has `merging` and `set_r`
    head_prefixes = ("mlp_head.",)  # the tensors a new class count re-creates
    config: TrunkConfig

    def _build_trunk(self, config: TrunkConfig) -> None:
        """The blocks, the final norm and the classification head."""
        dim = config.embed_dim
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, config.layer_norm_eps,
                  index, config.depth)
            for index in range(config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp_head = nn.Sequential(
            nn.LayerNorm(dim, eps=config.head_eps), nn.Linear(dim, config.num_classes)
        )
        self._methods: dict[str, ReductionMethod] = {}  # instances by method and options
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
    def reduction(self) -> ReductionMethod:
        """The method instance in use (derived from `merging`)."""
        return self._reduction

    @reduction.setter
    def reduction(self, method: ReductionMethod) -> None:
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
        state: TokenState,
        plan: Sequence[int | Sequence[int]],
    ) -> torch.Tensor:
        """Every block with the model's reduction method and its r (int, or one per clip);
        the state goes along.

        In eval mode the final state is kept in `self.last_state` for inspection; in training
        it is not, so no graph outlives a step.
        """
        for block, r in zip(self.blocks, plan, strict=True):
            tokens = block(tokens, state, self._reduction, r, self.proportional_attention)
        self.last_state = None if self.training else state
        return tokens


def _method_key(settings: MergeSettings) -> str:
    """The key of a record's method instance: its name and options."""
    return repr((settings.method, sorted((settings.method_options or {}).items())))
