"""Audio Spectrogram Transformer (Gong et al. 2021) with token reduction built into every block.

Parameter names follow timm's `vision_transformer.py` and the original AST code, so original AST
checkpoints (`module.v.*`, `module.mlp_head.*`) and timm DeiT weights load by name.

    fbank [B, T, F] → patches [B, f·t, D] → [CLS, DIST, patches] + pos_embed
        → blocks (attention → merge step → MLP) → norm → (tok0 + tok1) / 2 → mlp_head → logits

The blocks and the merge step are `models/vit.py`'s, with the model's reduction method
(models/reduction/, ToMe by default) as its one record `model.merging`
(models/reduction/settings.py) says; `set_r(r, method=...)` changes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastast_cli.models.inputs import InputSpec, stored_stats
from fastast_cli.models.records import ConfigRecord
from fastast_cli.models.reduction import DEFAULT_METHOD
from fastast_cli.models.reduction.schedule import NUM_PREFIX_TOKENS, RSchedule, resolve_schedule
from fastast_cli.models.reduction.settings import MergeSettings
from fastast_cli.models.vit import TokenClassifier, TokenState

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 192, "num_heads": 3},
    "small": {"embed_dim": 384, "num_heads": 6},
    "base": {"embed_dim": 768, "num_heads": 12},
}


@dataclass
class ASTConfig(ConfigRecord):
    """Everything needed to rebuild an AST; stored inside every fastast checkpoint."""

    num_classes: int = 527
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    fstride: int = 10
    tstride: int = 10
    num_mel_bins: int = 128
    target_length: int = 1024
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    labels: list[str] = field(default_factory=list)
    # The head's LayerNorm, when its eps differs from the backbone's (original AST files: torch's
    # default 1e-5); None: layer_norm_eps, as in Hugging Face's AST and earlier fastast configs.
    head_layer_norm_eps: float | None = None

    @property
    def head_eps(self) -> float:
        """eps of the classification head's LayerNorm."""
        return self.layer_norm_eps if self.head_layer_norm_eps is None else self.head_layer_norm_eps

    @classmethod
    def for_size(cls, size: str, **overrides: Any) -> ASTConfig:
        """Config of a named size (`tiny`, `small`, `base`), with any field overridden."""
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}: choose one of {', '.join(SIZES)}")
        return cls(**{**SIZES[size], **overrides})

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (frequency, time) of one input."""
        f_dim = (self.num_mel_bins - self.patch_size) // self.fstride + 1
        t_dim = (self.target_length - self.patch_size) // self.tstride + 1
        return f_dim, t_dim

    @property
    def num_patches(self) -> int:
        f_dim, t_dim = self.grid
        return f_dim * t_dim


class PatchEmbed(nn.Module):
    """Overlapping 16×16 patches of a 1-channel spectrogram: [B, T, F] → [B, f·t, D]."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            1,
            config.embed_dim,
            kernel_size=config.patch_size,
            stride=(config.fstride, config.tstride),
        )

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        image = fbank.unsqueeze(1).transpose(2, 3)  # [B, 1, F, T]
        patches = self.proj(image)  # [B, D, f, t]
        return patches.flatten(2).transpose(1, 2)  # [B, f·t, D], frequency-major


class AST(TokenClassifier):
    """AST classifier with token merging; `model(fbank)` → logits [B, num_classes].

    Merging is set with `set_r` (0 by default: the plain AST) and can change at any time.
    """

    architecture = "ast"  # the checkpoint tag (see models.checkpoints.save_checkpoint)

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + NUM_PREFIX_TOKENS, dim))
        self._build_trunk(config)
        self.track_source = False
        self.last_state: TokenState | None = None  # kept in eval mode only
        self._init_weights([self.cls_token, self.dist_token, self.pos_embed])

    def resolve_r(self, settings: MergeSettings) -> list[int]:
        """The r of each block: `settings.r` (an int or one per block) on its schedule."""
        return resolve_schedule(settings.r, self.config.depth, settings.schedule)

    def input_spec(self) -> InputSpec:
        """Fixed-length fbanks [B, target_length, num_mel_bins], with the stored stats."""
        return InputSpec(self.config.target_length, self.config.num_mel_bins, False,
                         *stored_stats(self.meta))

    def embed(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank [B, T, F] → tokens [B, N0, D] with CLS, DIST and positions."""
        patches = self.patch_embed(fbank)
        if (
            fbank.shape[2] != self.config.num_mel_bins
            or patches.shape[1] + NUM_PREFIX_TOKENS != self.pos_embed.shape[1]
        ):
            raise ValueError(
                f"input of {fbank.shape[1]} frames × {fbank.shape[2]} mel bins gives "
                f"{patches.shape[1]} patches, but the model was built for "
                f"{self.config.target_length} × {self.config.num_mel_bins} "
                f"({self.config.num_patches} patches)"
            )
        batch = patches.shape[0]  # symbolic under torch.export (len() would fix it)
        prefix = torch.cat([self.cls_token, self.dist_token], dim=1).expand(batch, -1, -1)
        return torch.cat([prefix, patches], dim=1) + self.pos_embed

    def forward_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the transformer blocks with merging: [B, N0, D] → [B, N_last, D].

        In eval mode the final `TokenState` (sizes, and sources when `track_source` is on) is kept
        in `self.last_state` for inspection; in training it is not, so no graph outlives a step.
        """
        state = TokenState()
        if self.track_source:
            eye = torch.eye(tokens.shape[1], device=tokens.device, dtype=tokens.dtype)
            state.source = eye.expand(tokens.shape[0], -1, -1)
        return self.run_blocks(tokens, state, self.r_schedule)

    def forward_features(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank [B, T, F] → pooled representation [B, D] (mean of CLS and DIST)."""
        tokens = self.norm(self.forward_blocks(self.embed(fbank)))
        return (tokens[:, 0] + tokens[:, 1]) / 2

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.mlp_head(self.forward_features(fbank))


def build_model(
    size: str = "base",
    num_classes: int | None = None,
    *,
    r: RSchedule = 0,
    schedule: str = "constant",
    method: str = DEFAULT_METHOD,
    **config: Any,
) -> AST:
    """A randomly initialised AST of a named size; `config` overrides ASTConfig fields.

    size: `tiny`, `small` or `base`; `ast` (or `ast-tiny`, `ast-small`, `ast-base`) names the
        model as the command line does (`ast` is base). num_classes: default the length of
        `labels=[...]` when given, else AudioSet's 527.
    Example: `build_model("tiny", 50, target_length=512, fstride=10, tstride=10, r=8)`,
    `build_model("ast", num_classes=11)`; `method` names the token-reduction method (see
    `AST.set_r`).
    """
    if not isinstance(size, str):
        raise TypeError(f"build_model's first argument is the model size (tiny, small, base), "
                        f"got {size!r}; pass the class count as num_classes=")
    size = model_size(size)
    if num_classes is None:
        num_classes = len(config["labels"]) if config.get("labels") else 527
    model = AST(ASTConfig.for_size(size, num_classes=num_classes, **config))
    return MergeSettings(r, schedule, method=method).apply(model)


def model_size(name: str) -> str:
    """The size a model name means: `tiny`/`small`/`base`, also as `ast-tiny`, ...; `ast` is
    base. Raises ValueError naming the choices otherwise."""
    size = name.lower().removeprefix("ast").lstrip("-_ ") or "base"
    if size not in SIZES:
        raise ValueError(f"unknown AST size {name!r}: choose one of {', '.join(SIZES)} (or "
                         "'ast' for base); other models: fastast_cli.models.classifiers."
                         "build_classifier")
    return size
