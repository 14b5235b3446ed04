"""What token merging grouped: each final token's patches drawn in one colour on the spectrogram.

With source tracking on, an AST reports which original tokens each final token covers
(`last_state.source` [B, N_final, N0]). Every patch ends up in exactly one final token, so the
patch grid [f_dim, t_dim] splits into groups: the token-id grid. Patches overlap when the strides
are below 16, so each patch is drawn as its stride cell (the fstride × tstride cell at its
top-left corner; the last row and column reach to the patch's far edge), which tiles the input
without overlap. Also recorded: tokens left after each block.
"""

from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap
from torch import nn

from fastast_cli.data.audio import read_audio
from fastast_cli.errors import FastASTError
from fastast_cli.inference.clips import clip_features, input_spec
from fastast_cli.inference.stream import FRAMES_PER_SECOND
from fastast_cli.models.ast import AST, NUM_PREFIX_TOKENS, ASTConfig
from fastast_cli.models.reduction.settings import merges_fixed_grid
from fastast_cli.reports.plots import draw_token_counts, new_figure, save_figure

PathLike = str | os.PathLike[str]


@dataclass
class MergeView:
    """One input window and how the model's tokens merged over it.

    features: [T, F] the model input (normalized log-mel); grid: [f_dim, t_dim] final-token id
    (0 .. groups-1, CLS/DIST excluded) of every patch; counts: [depth + 1] tokens entering the
    first block and after each block; start_s: where the window starts in its file.
    """

    features: torch.Tensor
    grid: torch.Tensor
    counts: list[int]
    config: ASTConfig
    r_schedule: list[int]
    start_s: float = 0.0

    @property
    def num_groups(self) -> int:
        return int(self.grid.max()) + 1

    def group_sizes(self) -> torch.Tensor:
        """Patches per final token [groups]."""
        return torch.bincount(self.grid.flatten(), minlength=self.num_groups)


def require_ast(model: nn.Module, checkpoint: PathLike) -> AST:
    """The model as a fixed-length AST; anything else (a CNN, PaSST, an ElasticAST) is a user
    error."""
    if not merges_fixed_grid(model):
        kind = getattr(getattr(model, "config", None), "backbone", type(model).__name__)
        raise FastASTError(
            f"{checkpoint} is a {kind}; merge views need a fixed-length AST checkpoint"
        )
    return model


def token_grid(source: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Final-token id of every patch: source [N_final, N0] (0/1) → ids [f_dim, t_dim].

    Ids count the non-prefix final tokens from 0 (final token i → id i - 2). Raises ValueError
    if the map is not a partition (a patch in no or in several final tokens).
    """
    patches = source[NUM_PREFIX_TOKENS:, NUM_PREFIX_TOKENS:] > 0.5  # [N_final - 2, f·t]
    per_patch = patches.sum(dim=0)
    if patches.shape[1] != grid[0] * grid[1] or not bool((per_patch == 1).all()):
        raise ValueError("token sources do not partition the patch grid")
    return patches.to(torch.int64).argmax(dim=0).reshape(grid)


def merge_view(model: AST, features: torch.Tensor, start_s: float = 0.0) -> MergeView:
    """Run one window features [T, F] through `model` with source tracking and forward hooks."""
    counts = [model.config.num_patches + NUM_PREFIX_TOKENS]
    hooks = [
        block.register_forward_hook(lambda _m, _i, out: counts.append(int(out.shape[1])))
        for block in model.blocks
    ]
    tracking, training = model.track_source, model.training
    try:
        model.track_source = True
        model.eval()
        with torch.inference_mode():
            model(features.unsqueeze(0).to(next(model.parameters()).device))
        source = model.last_state.source[0].float().cpu()
    finally:
        model.track_source = tracking
        model.train(training)
        for hook in hooks:
            hook.remove()
    grid = token_grid(source, model.config.grid)
    return MergeView(features.cpu(), grid, counts, model.config, list(model.r_schedule), start_s)


def file_merge_view(model: AST, path: PathLike, offset_s: float = 0.0) -> MergeView:
    """The merge view of the window starting `offset_s` seconds into an audio file."""
    spec = input_spec(model)
    samples, rate = read_audio(path)
    features = clip_features(samples, rate, spec)  # [max(frames, T), F]
    start = round(offset_s * FRAMES_PER_SECOND)
    last = features.shape[0] - spec.target_length
    if offset_s < 0 or start > last:
        length = samples.shape[-1] / rate
        raise FastASTError(
            f"--offset {offset_s} s is outside {path} ({length:.2f} s; one window is "
            f"{spec.target_length / FRAMES_PER_SECOND:g} s)"
        )
    window = features[start : start + spec.target_length]
    return merge_view(model, window, start / FRAMES_PER_SECOND)


def cell_edges(count: int, stride: int, patch: int) -> np.ndarray:
    """Edges [count + 1] of the stride cells of `count` patches along one axis (in bins/frames)."""
    edges = np.arange(count + 1, dtype=float) * stride
    edges[-1] = (count - 1) * stride + patch
    return edges


def group_colors(count: int) -> np.ndarray:
    """`count` distinct RGB colours [count, 3]: golden-ratio hues, alternating brightness."""
    colors = [
        colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.55 + 0.35 * (i % 3) / 2, 0.95 - 0.2 * (i % 2))
        for i in range(count)
    ]
    return np.array(colors)


def boundary_segments(
    grid: np.ndarray, f_edges: np.ndarray, t_edges: np.ndarray
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Line segments (x = frame, y = mel bin) between neighbouring cells of different groups."""
    segments = []
    rows, cols = grid.shape
    for f, t in zip(*np.nonzero(grid[:, 1:] != grid[:, :-1]), strict=True):
        x = t_edges[t + 1]
        segments.append(((x, f_edges[f]), (x, f_edges[f + 1])))
    for f, t in zip(*np.nonzero(grid[1:, :] != grid[:-1, :]), strict=True):
        y = f_edges[f + 1]
        segments.append(((t_edges[t], y), (t_edges[t + 1], y)))
    return segments


def draw_merge_view(
    view: MergeView,
    path: PathLike,
    *,
    title: str = "",
    alpha: float = 0.45,
    size: tuple[int, int] = (1400, 800),
) -> os.PathLike[str]:
    """Spectrogram with the token groups on top (left) and tokens per block (right), to `path`."""
    figure = new_figure(*size)
    spec_axes, count_axes = figure.subplots(1, 2, width_ratios=[3, 1])
    config = view.config
    frames, bins = view.features.shape
    spec_axes.imshow(view.features.T.numpy(), origin="lower", aspect="auto", cmap="gray",
                     extent=(0, frames, 0, bins), interpolation="nearest")
    f_edges = cell_edges(config.grid[0], config.fstride, config.patch_size)
    t_edges = cell_edges(config.grid[1], config.tstride, config.patch_size)
    grid = view.grid.numpy()
    colormap = ListedColormap(group_colors(view.num_groups))
    spec_axes.pcolormesh(t_edges, f_edges, grid, cmap=colormap, vmin=-0.5,
                         vmax=view.num_groups - 0.5, alpha=alpha, shading="flat")
    spec_axes.add_collection(LineCollection(boundary_segments(grid, f_edges, t_edges),
                                            colors="black", linewidths=0.8))
    spec_axes.set_xlim(0, frames)
    spec_axes.set_ylim(0, bins)
    spec_axes.set_xlabel(f"frame (10 ms; window starts at {view.start_s:g} s)")
    spec_axes.set_ylabel("mel bin")
    spec_axes.set_title(
        title or f"{config.num_patches} patches → {view.num_groups} tokens (+ CLS, DIST)"
    )
    draw_token_counts(count_axes, view.counts)
    figure.tight_layout()
    return save_figure(figure, path)
