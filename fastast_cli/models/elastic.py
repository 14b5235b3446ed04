"""ElasticAST (Feng et al. 2024): an AST for any length and resolution, with token merging.

Each clip is patched at its own length and the clips of a batch are packed into rows instead of
being padded or cut to one size:

    clips [T_i, F] → non-overlapping 16×16 patches [f·t_i, D] + freq_pos[f] + time_pos[t]
        → per clip [CLS, DIST, patches] → flat tokens [N, D], packed into rows by a `Layout`
        → blocks (block-diagonal attention → merge step inside each clip → MLP)
        → norm → per clip (CLS + DIST) / 2 → mlp_head → logits [num_clips, C]

Design choices:

- Pooling: every clip has its own CLS and DIST token, and its prediction is `(CLS + DIST) / 2`
  as in AST. This keeps AST's head and every AST weight usable as they are (`from_ast`), costs
  two tokens per clip, and needs no extra attention pass; the prefix tokens are protected from
  merging exactly as in the fixed AST. (ElasticAST's masked attention pooling would add a
  learned query per clip and a second masked attention; with per-clip prefix tokens, attention
  inside the clip already is that pooling.)
- Packing: see `fastast_cli.models.packing`. Tokens of all clips stay flat `[N, D]`, so the
  per-token layers never compute on padding; attention runs on rows of at most `max_tokens`
  tokens (greedy first-fit decreasing) with a block-diagonal SDPA mask, to which proportional
  attention adds log(size) per key. Padding neither attends to nor is attended by real tokens.
- Positional embeddings: factorized, `freq_pos_embed [1, F/16, D]` plus `time_pos_embed
  [1, T_max/16, D]`, indexed by each patch's grid position, so every length up to
  `target_length` frames (the time table's reach) is served without interpolation; CLS and DIST
  have `prefix_pos_embed [1, 2, D]`. `load_pos_embed_grid` initializes them from a 2-D AST/DeiT
  grid as its best additive fit: the frequency table is the grid averaged over time, the time
  table the grid averaged over frequency minus the grand mean (an additive grid is recovered
  exactly).
- Token reduction: `set_r(r, method=...)` with an int (tokens every clip loses per block), a
  list (one int per block) or a float in [0, 1) (per clip, round(r × its patch tokens) per
  block). The merge step (models/token_state.py, methods in models/reduction/) never crosses
  clips, and each clip is reduced exactly as the fixed AST reduces it alone.
- Resolution: the model is resolution-agnostic; frame shift 10 ms × q only changes how many time
  patches a clip has (see `fastast_cli.data.elastic_features`).

Parameter names are those of `fastast_cli.models.ast.AST` (patch_embed.proj, cls_token,
dist_token, blocks.N.*, norm, mlp_head) except the positional tables, so `from_ast` copies a
fixed AST's weights directly; the patch filters are the same 16×16 kernels, used at stride 16.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastast_cli.models.ast import AST, ASTConfig
from fastast_cli.models.backbone import TokenClassifier
from fastast_cli.models.inputs import InputSpec, stored_stats
from fastast_cli.models.packing import Layout
from fastast_cli.models.pos_embed import factorize_grid, resample_table, split_pos_embed
from fastast_cli.models.reduction.schedule import (
    NUM_PREFIX_TOKENS,
    RSchedule,
    resolve_schedule,
    tokens_per_block,
)
from fastast_cli.models.token_state import PackedState

# Parameters an AST checkpoint does not hold in this form.
POSITION_TABLES = ("prefix_pos_embed", "freq_pos_embed", "time_pos_embed")


@dataclass
class ElasticConfig(ASTConfig):
    """ASTConfig with non-overlapping patches and a packing budget.

    target_length: the longest clip, in frames, that the time table covers (1024 frames: 64
        time positions, 10.24 s at q = 1, 40.96 s at q = 4).
    max_tokens: tokens per packed row (CLS and DIST of each clip included).
    """

    fstride: int = 16
    tstride: int = 16
    target_length: int = 1024
    max_tokens: int = 2048

    def __post_init__(self) -> None:
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
        self.max_tokens = config.max_tokens
        self.r_fraction: float | None = None
        self.schedule = "constant"
        self.token_dropout = 0.0  # share of patch tokens dropped in training (ElasticAST: 0.1)
        self.last_state: PackedState | None = None  # kept in eval mode only
        positions = [getattr(self, name) for name in POSITION_TABLES]
        self._init_weights([self.cls_token, self.dist_token, *positions])

    def input_spec(self) -> InputSpec:
        """Clips [T_i, num_mel_bins] of any length up to `target_length` frames, never padded."""
        return InputSpec(self.config.target_length, self.config.num_mel_bins, True,
                         *stored_stats(self.meta))

    # --- merging ------------------------------------------------------------------------------

    def set_r(
        self,
        r: RSchedule | float,
        schedule: str = "constant",
        proportional_attention: bool | None = None,
        method: str | None = None,
        method_options: Mapping[str, Any] | None = None,
    ) -> ElasticAST:
        """Set token reduction for every clip; returns the model.

        r: an int (tokens each clip loses per block) or a list with one int per block, as in
            `AST.set_r`; or a float in [0, 1): each clip loses round(r × its patch tokens) per
            block, so long and short clips shrink alike. 0 is the plain model.
        schedule: `constant` or `decreasing` (2r → 0), applied per clip.
        Every value is capped per block at half of the clip's mergeable tokens.
        method, method_options: the reduction method and its options, as in `AST.set_r`.
        proportional_attention and method: None keeps the model's.
        """
        if isinstance(r, float):
            if not 0.0 <= r < 1.0:
                raise ValueError(f"a fractional r must lie in [0, 1), got {r}")
            resolve_schedule(0, self.config.depth, schedule)  # validates the schedule name
            self.r_fraction, self.r_schedule = r, [0] * self.config.depth
        else:
            self.r_fraction = None
            self.r_schedule = resolve_schedule(r, self.config.depth, schedule)
        self.schedule = schedule
        self.set_method(method or self.reduction_method, method_options)
        if proportional_attention is not None:
            self.proportional_attention = proportional_attention
        return self

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

    def forward_blocks(
        self, tokens: torch.Tensor, layout: Layout, plan: Sequence[Sequence[int]] | None = None
    ) -> tuple[torch.Tensor, Layout]:
        """Run the blocks with merging: flat [N0, D] → [N_last, D] and its layout.

        plan: tokens each clip loses in each block, [depth][num_clips] (default: `merge_plan`
            of the `set_r` setting); any per-clip values work within the per-block cap.
        In eval mode the final PackedState (layout and sizes) is kept in `self.last_state`.
        """
        state = PackedState(layout)
        plan = self.merge_plan(layout.counts) if plan is None else plan
        tokens = self.run_blocks(tokens, state, plan)
        state.layout.forget_mask()  # the [R, 1, L, L] mask is not needed past the last block
        return tokens, state.layout

    def pool(self, tokens: torch.Tensor, layout: Layout) -> torch.Tensor:
        """(CLS + DIST) / 2 of every clip after the final norm: flat [N, D] → [K, D]."""
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
        tokens, layout = self.forward_blocks(tokens, layout)
        return self.pool(tokens, layout)

    def drop_tokens(
        self, tokens: torch.Tensor, counts: Sequence[int]
    ) -> tuple[torch.Tensor, list[int]]:
        """Token dropout (ElasticAST, 0.1 in training): every patch token is dropped with
        probability `token_dropout`; CLS and DIST always stay. Flat tokens [N, D] with `counts`
        per clip → the kept tokens [N', D] and the new counts."""
        layout = Layout.one_per_row(counts, tokens.device)
        keep = (layout.token_position < NUM_PREFIX_TOKENS) | (
            torch.rand(len(tokens), device=tokens.device) >= self.token_dropout)  # [N]
        kept_counts = torch.bincount(layout.token_clip[keep], minlength=len(counts))
        return tokens[keep], kept_counts.tolist()

    def forward(self, clips: Sequence[torch.Tensor], layout: Layout | None = None) -> torch.Tensor:
        return self.mlp_head(self.forward_features(clips, layout))

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
        freq, time = factorize_grid(grid_2d.float())
        f_dim, t_dim = self.config.grid
        f_step, t_step = (
            (None, None)
            if strides is None
            else (self.config.patch_size / strides[0], self.config.patch_size / strides[1])
        )
        self.prefix_pos_embed.copy_(prefix)
        self.freq_pos_embed.copy_(resample_table(freq, f_dim, f_step)[None])
        self.time_pos_embed.copy_(resample_table(time, t_dim, t_step)[None])

    @classmethod
    def from_ast(cls, ast: AST, *, target_length: int = 1024, max_tokens: int = 2048) -> ElasticAST:
        """An ElasticAST holding a fixed AST's weights; its 2-D pos_embed becomes the tables.

        target_length: longest clip (frames) of the new model. Merging settings are not copied.
        """
        config = ElasticConfig.from_ast_config(
            ast.config, target_length=target_length, max_tokens=max_tokens
        )
        model = cls(config)
        weights = {name: value for name, value in ast.state_dict().items() if name != "pos_embed"}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if set(missing) != set(POSITION_TABLES) or unexpected:
            raise ValueError(
                f"AST weights do not fit the ElasticAST: missing {missing}, unexpected {unexpected}"
            )
        model.load_pos_embed_grid(
            ast.pos_embed.detach(), ast.config.grid, (ast.config.fstride, ast.config.tstride)
        )
        model.meta = dict(ast.meta)
        return model.to(ast.pos_embed.device)


def build_elastic(
    size: str = "base",
    num_classes: int = 527,
    *,
    r: RSchedule | float = 0,
    schedule: str = "constant",
    method: str = "tome",
    **config: Any,
) -> ElasticAST:
    """A randomly initialised ElasticAST of a named size; `config` overrides ElasticConfig fields.

    Example: `build_elastic("tiny", 50, max_tokens=1024, r=0.05)`.
    """
    model = ElasticAST(ElasticConfig.for_size(size, num_classes=num_classes, **config))
    return model.set_r(r, schedule, method=method)
