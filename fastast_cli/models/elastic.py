"""ElasticAST (Feng et al. 2024): an AST for any length and resolution, with token merging.

Each clip is patched at its own length and the clips of a batch are packed into rows instead of
being padded or cut to one size:

    clips [T_i, F] → non-overlapping 16×16 patches [f·t_i, D] + freq_pos[f] + time_pos[t]
        → per clip [CLS, DIST, patches] → flat tokens [N, D], packed into rows by a `Layout`
        → blocks (block-diagonal attention → merge step inside each clip → MLP)
        → norm → per clip: attention pooling (or (CLS + DIST) / 2) → mlp_head → logits [K, C]

Design choices (`ElasticConfig` records the three that ElasticAST's paper and code decide
otherwise than fastast first did; `PUBLISHED` holds ElasticAST's, which new runs take, and a
checkpoint without them is the earlier model and loads as it was):

- Pooling (`pooling`): `attention`, ElasticAST's masked attention pooling (models/pooling.py):
  one learned query attends to every token of its clip (and nothing else) after the final
  norm. `cls-dist`: every clip's prediction is `(CLS + DIST) / 2` as in AST, so an AST's head
  scores as it did. Either way each clip keeps a CLS and a DIST token (AST's weights use
  them), protected from merging as in the fixed AST.
- Packing: see `fastast_cli.models.reduction.layout`. Tokens of all clips stay flat `[N, D]`, so the
  per-token layers never compute on padding; attention runs on rows of at most `max_tokens`
  tokens (greedy first-fit decreasing) with a block-diagonal SDPA mask, to which proportional
  attention adds log(size) per key. Padding neither attends to nor is attended by real tokens.
- Positional embeddings: factorized, `freq_pos_embed [1, F/16, D]` plus `time_pos_embed
  [1, T_max/16, D]`, indexed by each patch's grid position, so every length up to
  `target_length` frames (the time table's reach) is served without interpolation; CLS and DIST
  have `prefix_pos_embed [1, 2, D]`. `load_pos_embed_grid` initializes them from a 2-D AST/DeiT
  grid (`position_fit`): `marginal`, as ElasticAST, the frequency table is the grid averaged
  over time and the time table the grid averaged over frequency; `additive` also subtracts the
  grand mean from the time table (the best additive fit: an additive grid is recovered
  exactly).
- Token dropout in training (`token_dropout_mode`, share `token_dropout`): `exact`, as
  ElasticAST, keeps int(n·(1 − p)) of each clip's n patches, at least one; `bernoulli` drops
  each patch with probability p.
- Token reduction: `set_r(r, method=...)` with an int (tokens every clip loses per block), a
  list (one int per block) or a float in [0, 1) (per clip, round(r × its patch tokens) per
  block). The merge step (models/vit.py's `Block`, methods in models/reduction/) never crosses
  clips, and each clip is reduced exactly as the fixed AST reduces it alone.
- Resolution: the model is resolution-agnostic; frame shift 10 ms × q only changes how many time
  patches a clip has (see `fastast_cli.data.elastic_features`).

Parameter names are those of `fastast_cli.models.ast.AST` (patch_embed.proj, cls_token,
dist_token, blocks.N.*, norm, mlp_head) except the positional tables and the attention pooling
(`attn_pool.*`), so `from_ast` copies a fixed AST's weights directly; the patch filters are the
same 16×16 kernels, used at stride 16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastast_cli.models.ast import AST, ASTConfig
from fastast_cli.models.inputs import InputSpec, stored_stats
from fastast_cli.models.pooling import AttentionPool
from fastast_cli.models.pos_embed import factorize_grid, resample_table, split_pos_embed
from fastast_cli.models.reduction import DEFAULT_METHOD
from fastast_cli.models.reduction.layout import Layout, device_tensor
from fastast_cli.models.reduction.schedule import (
    NUM_PREFIX_TOKENS,
    RSchedule,
    resolve_schedule,
    tokens_per_block,
)
from fastast_cli.models.reduction.settings import MergeSettings
from fastast_cli.models.vit import TokenClassifier, TokenState

# Parameters an AST checkpoint does not hold in this form.
POSITION_TABLES = ("prefix_pos_embed", "freq_pos_embed", "time_pos_embed")
# The choices of ElasticConfig as ElasticAST publishes them (paper and released code): new
# runs take these; the config's defaults are what earlier checkpoints hold.
PUBLISHED: dict[str, str] = {"pooling": "attention", "position_fit": "marginal",
                             "token_dropout_mode": "exact"}
CHOICES: dict[str, tuple[str, ...]] = {"pooling": ("attention", "cls-dist"),
                                       "position_fit": ("marginal", "additive"),
                                       "token_dropout_mode": ("exact", "bernoulli")}


@dataclass
class ElasticConfig(ASTConfig):
    """ASTConfig with non-overlapping patches and a packing budget.

    target_length: the longest clip, in frames, that the time table covers (1024 frames: 64
        time positions, 10.24 s at q = 1, 40.96 s at q = 4).
    max_tokens: tokens per packed row (CLS and DIST of each clip included).
    pooling, position_fit, token_dropout_mode: see the module docstring (`CHOICES`); the
        defaults are the model of checkpoints written before these fields (`PUBLISHED`:
        ElasticAST's).
    """

    fstride: int = 16
    tstride: int = 16
    target_length: int = 1024
    max_tokens: int = 2048
    pooling: str = "cls-dist"
    position_fit: str = "additive"
    token_dropout_mode: str = "bernoulli"

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"not {getattr(self, name)!r}")
        if self.fstride != self.patch_size or self.tstride != self.patch_size:
            raise ValueError(
                f"ElasticAST uses non-overlapping patches: fstride and tstride must equal "
                f"patch_size {self.patch_size}, got {self.fstride}/{self.tstride}"
            )

    @classmethod
    def from_ast_config(cls, config: ASTConfig, **overrides: Any) -> ElasticConfig:
        """The elastic twin of an AST config: same width, depth, heads, classes and labels."""
        own = {"fstride", "tstride", "target_length"}
        shared = {f.name: getattr(config, f.name) for f in fields(ASTConfig) if f.name not in own}
        return cls(**{**shared, **overrides})


class PatchEmbed(nn.Module):
    """Non-overlapping patches of every clip through one matmul: clips [T_i, F] → [Σ f·t_i, D].

    Frames beyond the last whole patch (T_i mod 16) are dropped. Patches are frequency-major
    within a clip, as in AST. `proj` is a Conv2d so that AST's patch filters load by name.
    """

    def __init__(self, config: ElasticConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = nn.Conv2d(
            1, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )

    def grid(self, fbank: torch.Tensor) -> tuple[int, int]:
        """Patch grid (frequency, time) of one clip [T, F]."""
        return fbank.shape[1] // self.patch_size, fbank.shape[0] // self.patch_size

    def patchify(self, fbank: torch.Tensor) -> torch.Tensor:
        """[T, F] → pixels [f·t, p·p], each patch ordered (frequency offset, time offset)."""
        f_dim, t_dim = self.grid(fbank)
        p = self.patch_size
        image = fbank[: t_dim * p, : f_dim * p].transpose(0, 1)  # [F, T]
        return image.reshape(f_dim, p, t_dim, p).permute(0, 2, 1, 3).reshape(f_dim * t_dim, p * p)

    def forward(self, clips: Sequence[torch.Tensor]) -> torch.Tensor:
        pixels = torch.cat([self.patchify(fbank) for fbank in clips])  # [Σ f·t_i, p·p]
        return F.linear(pixels, self.proj.weight.flatten(1), self.proj.bias)


class ElasticAST(TokenClassifier):
    """Variable-length AST on packed clips; `model(clips)` → logits [num_clips, num_classes].

    clips: a sequence of normalized fbanks [T_i, F] (any T_i ≥ 16 up to `config.target_length`).
    `max_tokens` (from the config, changeable at any time) bounds a packed row; merging is set
    with `set_r` (0 by default).
    """

    architecture = "elastic"  # the checkpoint tag (see models.checkpoints.save_checkpoint)

    def __init__(self, config: ElasticConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        f_dim, t_dim = config.grid
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.prefix_pos_embed = nn.Parameter(torch.zeros(1, NUM_PREFIX_TOKENS, dim))
        self.freq_pos_embed = nn.Parameter(torch.zeros(1, f_dim, dim))
        self.time_pos_embed = nn.Parameter(torch.zeros(1, t_dim, dim))
        self._build_trunk(config)
        if config.pooling == "attention":
            self.attn_pool = AttentionPool(dim, config.num_heads, config.qkv_bias)
        self.max_tokens = config.max_tokens
        self.token_dropout = 0.0  # share of patch tokens dropped in training (ElasticAST: 0.1)
        self.last_state: TokenState | None = None  # kept in eval mode only
        positions = [getattr(self, name) for name in POSITION_TABLES]
        self._init_weights([self.cls_token, self.dist_token, *positions])
        if config.pooling == "attention":
            nn.init.normal_(self.attn_pool.query)  # ElasticAST: a standard normal query

    def input_spec(self) -> InputSpec:
        """Clips [T_i, num_mel_bins] of any length up to `target_length` frames, never padded."""
        return InputSpec(self.config.target_length, self.config.num_mel_bins, True,
                         *stored_stats(self.meta))

    # --- merging ------------------------------------------------------------------------------

    def resolve_r(self, settings: MergeSettings) -> list[int]:
        """The r of each block for an int r or one per block, as `AST.resolve_r`; zeros for a
        fraction in [0, 1) of each clip's patch tokens (`clip_schedule` resolves it per clip)."""
        if isinstance(settings.r, float):
            if not 0.0 <= settings.r < 1.0:
                raise ValueError(f"a fractional r must lie in [0, 1), got {settings.r}")
            resolve_schedule(0, self.config.depth, settings.schedule)  # checks the name
            return [0] * self.config.depth
        return resolve_schedule(settings.r, self.config.depth, settings.schedule)

    @property
    def r_fraction(self) -> float | None:
        """The fraction of each clip's patch tokens merged per block (from `merging`); None for
        an int r."""
        return self.merging.r if isinstance(self.merging.r, float) else None

    @property
    def schedule(self) -> str:
        """The r schedule, applied per clip (from `merging`)."""
        return self.merging.schedule

    def clip_schedule(self, num_tokens: int) -> list[int]:
        """Tokens a clip of `num_tokens` tokens (prefix included) is asked to lose per block."""
        if self.r_fraction is None:
            return self.r_schedule
        r = round(self.r_fraction * (num_tokens - NUM_PREFIX_TOKENS))
        return resolve_schedule(r, self.config.depth, self.schedule)

    def token_counts(self, num_tokens: int) -> list[int]:
        """Tokens of a clip after each block, the per-block cap applied."""
        return tokens_per_block(num_tokens, self.clip_schedule(num_tokens), NUM_PREFIX_TOKENS)

    def merge_plan(self, counts: Sequence[int]) -> list[list[int]]:
        """Tokens each clip is asked to lose in each block: [depth][num_clips]; the token
        state caps each block's value for the clip's tokens then (`allowed_merges`)."""
        schedules = [self.clip_schedule(count) for count in counts]
        return [list(block) for block in zip(*schedules, strict=True)]

    # --- packing and forward ------------------------------------------------------------------

    def check_clip(self, fbank: torch.Tensor, index: int = 0) -> None:
        """Raise ValueError unless `fbank` is a clip [T, F] this model can take."""
        config = self.config
        if fbank.ndim != 2 or fbank.shape[1] != config.num_mel_bins:
            raise ValueError(
                f"clip {index}: expected an fbank [frames, {config.num_mel_bins}], "
                f"got {list(fbank.shape)}"
            )
        frames, reach = fbank.shape[0], self.time_pos_embed.shape[1]
        if not config.patch_size <= frames < (reach + 1) * config.patch_size:
            raise ValueError(
                f"clip {index} has {frames} frames; this model takes {config.patch_size} to "
                f"{reach * config.patch_size} frames (its time table covers {reach} patches): "
                "cut the clip or build the model with a larger target_length"
            )

    def num_tokens(self, fbank: torch.Tensor) -> int:
        """Tokens of one clip [T, F]: CLS, DIST and its f·t patches."""
        f_dim, t_dim = self.patch_embed.grid(fbank)
        return NUM_PREFIX_TOKENS + f_dim * t_dim

    def pack(self, clips: Sequence[torch.Tensor]) -> Layout:
        """Greedy layout of `clips` in rows of at most `max_tokens` tokens."""
        counts = [self.num_tokens(fbank) for fbank in clips]
        return Layout.pack(counts, self.max_tokens, self.cls_token.device)

    def embed(self, clips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Clips [T_i, F] → flat tokens [N, D]: per clip CLS, DIST, patches, with positions."""
        for index, fbank in enumerate(clips):
            self.check_clip(fbank, index)
        grids = [self.patch_embed.grid(fbank) for fbank in clips]
        patches = self.patch_embed(clips)  # [Σ f·t_i, D]
        freq_index, time_index = self._grid_positions(grids, patches.device)
        patches = patches + self.freq_pos_embed[0, freq_index] + self.time_pos_embed[0, time_index]
        prefix = torch.cat([self.cls_token, self.dist_token], dim=1)[0] + self.prefix_pos_embed[0]
        per_clip = patches.split([f * t for f, t in grids])
        return torch.cat([part for clip in per_clip for part in (prefix, clip)])

    @staticmethod
    def _grid_positions(
        grids: Sequence[tuple[int, int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frequency and time index [Σ f·t_i] of every patch, frequency-major per clip."""
        freq = [torch.arange(f, device=device).repeat_interleave(t) for f, t in grids]
        time = [torch.arange(t, device=device).repeat(f) for f, t in grids]
        return torch.cat(freq), torch.cat(time)

    def run_packed(
        self, tokens: torch.Tensor, layout: Layout, plan: Sequence[Sequence[int]] | None = None
    ) -> tuple[torch.Tensor, TokenState]:
        """Run the blocks with merging: flat [N0, D] → [N_last, D] and the final packed
        `TokenState` (layout and sizes).

        plan: tokens each clip loses in each block, [depth][num_clips] (default: `merge_plan`
            of the `set_r` setting); any per-clip values work within the per-block cap.
        In eval mode the final state is also kept in `self.last_state`.
        """
        state = TokenState(layout)
        plan = self.merge_plan(layout.counts) if plan is None else plan
        tokens = self.run_blocks(tokens, state, plan)
        state.layout.forget_mask()  # the [R, 1, L, L] mask is not needed past the last block
        return tokens, state

    def forward_blocks(
        self, tokens: torch.Tensor, layout: Layout, plan: Sequence[Sequence[int]] | None = None
    ) -> tuple[torch.Tensor, Layout]:
        """`run_packed`, returning the final layout: flat [N_last, D] and its Layout."""
        tokens, state = self.run_packed(tokens, layout, plan)
        return tokens, state.layout

    def pool(
        self, tokens: torch.Tensor, layout: Layout, sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One vector per clip after the final norm: flat [N, D] → [K, D].

        `attention` pooling: the learned query over each clip's tokens (with proportional
        attention, log(size) per key from `sizes` [N, 1]); `cls-dist`: (CLS + DIST) / 2.
        """
        if self.config.pooling == "attention":
            proportional = self.proportional_attention and sizes is not None
            return self.attn_pool(self.norm(tokens), layout,
                                  sizes.log() if proportional else None)
        leading = torch.arange(NUM_PREFIX_TOKENS, device=tokens.device)
        prefix = self.norm(tokens[layout.starts[:, None] + leading])  # [K, 2, D], never merged
        return (prefix[:, 0] + prefix[:, 1]) / 2

    def forward_features(
        self, clips: Sequence[torch.Tensor], layout: Layout | None = None
    ) -> torch.Tensor:
        """Clips [T_i, F] → pooled representation [num_clips, D]."""
        if len(clips) == 0:
            raise ValueError("no clips to run")
        tokens = self.embed(clips)
        if self.training and self.token_dropout > 0:
            tokens, counts = self.drop_tokens(tokens, [self.num_tokens(fbank) for fbank in clips])
            layout = Layout.pack(counts, self.max_tokens, tokens.device)
        elif layout is None:
            layout = self.pack(clips)
        elif list(layout.counts) != [self.num_tokens(fbank) for fbank in clips]:
            raise ValueError("the layout does not hold these clips' token counts")
        tokens, state = self.run_packed(tokens, layout)
        return self.pool(tokens, state.layout, state.sizes)

    def drop_tokens(
        self, tokens: torch.Tensor, counts: Sequence[int]
    ) -> tuple[torch.Tensor, list[int]]:
        """Token dropout (ElasticAST, 0.1 in training) of flat tokens [N, D] with `counts` per
        clip → the kept tokens [N', D], in their order, and the new counts. CLS and DIST always
        stay. `exact` (`config.token_dropout_mode`): a random int(n·(1 − p)) of each clip's n
        patches, at least one, as ElasticAST; `bernoulli`: each patch kept with 1 − p."""
        layout = Layout.one_per_row(counts, tokens.device)
        is_patch = layout.token_position >= NUM_PREFIX_TOKENS  # [N]
        if self.config.token_dropout_mode == "exact":
            kept_patches = exact_keep(layout.token_clip[is_patch],
                                      [count - NUM_PREFIX_TOKENS for count in counts],
                                      self.token_dropout)
            keep = ~is_patch
            keep[is_patch] = kept_patches
        else:
            keep = ~is_patch | (torch.rand(len(tokens), device=tokens.device)
                                >= self.token_dropout)  # [N]
        kept_counts = torch.bincount(layout.token_clip[keep], minlength=len(counts))
        return tokens[keep], kept_counts.tolist()

    def forward(self, clips: Sequence[torch.Tensor], layout: Layout | None = None) -> torch.Tensor:
        return self.mlp_head(self.forward_features(clips, layout))

    # --- one fixed length -----------------------------------------------------------------------

    def fixed_length(self, frames: int) -> AST:
        """The fixed AST that computes what this model computes on a clip of exactly `frames`
        frames: the same weights, 16×16 patches at stride 16 (frames past the last whole patch
        dropped, as here), `pos_embed` [1, 2 + f·t, D] = prefix table, then freq_pos[f] +
        time_pos[t] frequency-major, and the per-clip merge schedule at that length (a
        fractional r becomes its int per block). For ONNX graphs and transformers folders,
        which take one input length. Raises ValueError for a length the model cannot take.
        """
        config = self.config
        self.check_clip(torch.zeros(frames, config.num_mel_bins))
        fixed_config = ASTConfig(**{
            **{f.name: getattr(config, f.name) for f in fields(ASTConfig)},
            "fstride": config.patch_size, "tstride": config.patch_size, "target_length": frames})
        ast = AST(fixed_config)
        weights = {name: value for name, value in self.state_dict().items()
                   if name not in POSITION_TABLES}
        f_dim, t_dim = fixed_config.grid
        grid = (self.freq_pos_embed[0, :f_dim, None] + self.time_pos_embed[0, None, :t_dim])
        weights["pos_embed"] = torch.cat(
            [self.prefix_pos_embed[0], grid.reshape(f_dim * t_dim, -1)])[None]  # [1, 2+f·t, D]
        ast.load_state_dict({name: value.detach() for name, value in weights.items()})
        schedule = self.clip_schedule(NUM_PREFIX_TOKENS + f_dim * t_dim)
        ast.merging = replace(self.merging, r=list(schedule), schedule="constant")
        ast.meta = dict(self.meta)
        return ast.to(self.cls_token.device).eval()

    # --- initialization from a fixed AST ------------------------------------------------------

    @torch.no_grad()
    def load_pos_embed_grid(
        self,
        pos_embed: torch.Tensor,
        grid: tuple[int, int],
        strides: tuple[int, int] | None = None,
    ) -> None:
        """Initialize the positional tables from an AST/DeiT `pos_embed` [1, 2 + f·t, D].

        grid: its (frequency, time) patch grid. strides: its (fstride, tstride) for an AST grid
        (positions then map by physical frame), None for an ImageNet grid (see resample_table).
        """
        prefix, grid_2d = split_pos_embed(pos_embed, grid, NUM_PREFIX_TOKENS)
        freq, time = factorize_grid(grid_2d.float(),
                                    centered=self.config.position_fit == "additive")
        f_dim, t_dim = self.config.grid
        f_step, t_step = (
            (None, None)
            if strides is None
            else (self.config.patch_size / strides[0], self.config.patch_size / strides[1])
        )
        self.prefix_pos_embed.copy_(prefix)
        self.freq_pos_embed.copy_(resample_table(freq, f_dim, f_step)[None])
        self.time_pos_embed.copy_(resample_table(time, t_dim, t_step)[None])

    @torch.no_grad()
    def load_pool_from_blocks(self) -> None:
        """Initialize the attention pooling's projections as ElasticAST does from a pretrained
        ViT: the mean over the blocks of their attention's query, key/value and output
        projections (the query vector itself stays random)."""
        dim = self.config.embed_dim
        qkv_weight = torch.stack([block.attn.qkv.weight for block in self.blocks]).mean(0)
        proj_weight = torch.stack([block.attn.proj.weight for block in self.blocks]).mean(0)
        pool = self.attn_pool
        pool.q.weight.copy_(qkv_weight[:dim])
        pool.kv.weight.copy_(qkv_weight[dim:])
        pool.proj.weight.copy_(proj_weight)
        pool.proj.bias.copy_(torch.stack([block.attn.proj.bias for block in self.blocks]).mean(0))
        if pool.q.bias is not None:
            qkv_bias = torch.stack([block.attn.qkv.bias for block in self.blocks]).mean(0)
            pool.q.bias.copy_(qkv_bias[:dim])
            pool.kv.bias.copy_(qkv_bias[dim:])

    @classmethod
    def from_ast(
        cls, ast: AST, *, target_length: int = 1024, max_tokens: int = 2048, **choices: str
    ) -> ElasticAST:
        """An ElasticAST holding a fixed AST's weights; its 2-D pos_embed becomes the tables.

        target_length: longest clip (frames) of the new model. choices: `pooling`,
        `position_fit`, `token_dropout_mode` (default: the config's, the earlier model, whose
        `cls-dist` pooling scores as the AST does; `PUBLISHED`: ElasticAST's, the attention
        pooling then initialized by `load_pool_from_blocks`). Merging settings are not copied.
        """
        config = ElasticConfig.from_ast_config(
            ast.config, target_length=target_length, max_tokens=max_tokens, **choices
        )
        model = cls(config)
        weights = {name: value for name, value in ast.state_dict().items() if name != "pos_embed"}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if {name for name in missing if not name.startswith("attn_pool.")} != set(
                POSITION_TABLES) or unexpected:
            raise ValueError(
                f"AST weights do not fit the ElasticAST: missing {missing}, unexpected {unexpected}"
            )
        model.load_pos_embed_grid(
            ast.pos_embed.detach(), ast.config.grid, (ast.config.fstride, ast.config.tstride)
        )
        if config.pooling == "attention":
            model.load_pool_from_blocks()
        model.meta = dict(ast.meta)
        return model.to(ast.pos_embed.device)


def exact_keep(token_clip: torch.Tensor, counts: Sequence[int], drop: float) -> torch.Tensor:
    """Which of the patches to keep [M] (bool) when each clip keeps exactly
    max(1, int(n·(1 − drop))) of its n patches, chosen at random (ElasticAST's token dropout).

    token_clip: [M] clip of every patch, grouped by clip in order; counts: patches per clip.
    """
    keep_per_clip = device_tensor([max(1, int(n * (1 - drop))) for n in counts],
                                  token_clip.device)
    # A random order inside each clip: clip index + uniform noise, sorted.
    noise = torch.rand(len(token_clip), device=token_clip.device, dtype=torch.float64)
    order = torch.argsort(token_clip.double() + noise)
    first = torch.cumsum(device_tensor([0, *counts[:-1]], token_clip.device), 0)
    sorted_clip = token_clip[order]
    rank = torch.arange(len(order), device=token_clip.device) - first[sorted_clip]
    keep = torch.zeros(len(token_clip), dtype=torch.bool, device=token_clip.device)
    keep[order] = rank < keep_per_clip[sorted_clip]
    return keep


def build_elastic(
    size: str = "base",
    num_classes: int = 527,
    *,
    r: RSchedule | float = 0,
    schedule: str = "constant",
    method: str = DEFAULT_METHOD,
    **config: Any,
) -> ElasticAST:
    """A randomly initialised ElasticAST of a named size; `config` overrides ElasticConfig fields.

    Example: `build_elastic("tiny", 50, max_tokens=1024, r=0.05)`.
    """
    model = ElasticAST(ElasticConfig.for_size(size, num_classes=num_classes, **config))
    return MergeSettings(r, schedule, method=method).apply(model)
