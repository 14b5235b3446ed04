"""Adapting learned positional embeddings to a different patch grid.

A checkpoint's `pos_embed` [1, P + f0·t0, D] holds P prefix-token embeddings (CLS and DIST in AST)
followed by one embedding per patch of an (f0 frequency × t0 time) grid, frequency-major. A model
built for another input length, stride or an ImageNet backbone (square grid, 24×24 for 384-pixel
DeiT) needs the grid (f1, t1). As in the original AST, each axis is adapted on its own, time first,
then frequency:

- target smaller: cut the center `[s0 // 2 - s1 // 2, s0 // 2 - s1 // 2 + s1)` out of the axis;
- target larger: bilinear interpolation (`align_corners=False`) of that axis only;
- equal: left as it is.

The prefix-token embeddings are kept unchanged. PaSST's factorized time table follows PaSST's
own rule (`fit_time_table`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Axis of the [1, D, f, t] grid that each name refers to.
FREQUENCY_AXIS = 2
TIME_AXIS = 3


def split_pos_embed(
    pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """pos_embed [1, P + f·t, D] → prefix [1, P, D] and patch grid [1, D, f, t]."""
    f_dim, t_dim = grid
    expected = num_prefix_tokens + f_dim * t_dim
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != expected:
        raise ValueError(
            f"pos_embed of shape {list(pos_embed.shape)} does not hold {num_prefix_tokens} "
            f"prefix tokens and a {f_dim}×{t_dim} grid (expected [1, {expected}, D])"
        )
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    return prefix, patches.transpose(1, 2).reshape(1, -1, f_dim, t_dim)


def join_pos_embed(prefix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """prefix [1, P, D] and patch grid [1, D, f, t] → pos_embed [1, P + f·t, D]."""
    patches = grid.flatten(2).transpose(1, 2)  # [1, f·t, D], frequency-major
    return torch.cat([prefix, patches], dim=1)


def center_cut(grid: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Keep the central `size` positions of `axis` of grid [1, D, f, t]."""
    start = grid.shape[axis] // 2 - size // 2
    return grid.narrow(axis, start, size)


def interpolate_axis(grid: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Bilinearly stretch `axis` of grid [1, D, f, t] to `size` positions; the other axis stays."""
    target = list(grid.shape[2:])
    target[axis - 2] = size
    return F.interpolate(grid, size=tuple(target), mode="bilinear", align_corners=False)


def resize_axis(grid: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Center-cut `axis` of grid [1, D, f, t] when `size` is smaller, interpolate when larger."""
    current = grid.shape[axis]
    if size < current:
        return center_cut(grid, size, axis)
    if size > current:
        return interpolate_axis(grid, size, axis)
    return grid


def resample_pos_embed(
    pos_embed: torch.Tensor,
    source_grid: tuple[int, int],
    target_grid: tuple[int, int],
    num_prefix_tokens: int = 2,
) -> torch.Tensor:
    """Adapt pos_embed [1, P + f0·t0, D] on grid (f0, t0) to [1, P + f1·t1, D] on (f1, t1).

    Time is adapted first, then frequency; the P prefix embeddings are kept. Equal grids return
    an identical copy. Interpolation runs in float32 and the result keeps the input's dtype.
    """
    prefix, grid = split_pos_embed(pos_embed, source_grid, num_prefix_tokens)
    f_target, t_target = target_grid
    grid = resize_axis(grid.float(), t_target, TIME_AXIS)
    grid = resize_axis(grid, f_target, FREQUENCY_AXIS)
    return join_pos_embed(prefix, grid.to(pos_embed.dtype)).contiguous()


def fit_time_table(table: torch.Tensor, columns: int) -> torch.Tensor:
    """PaSST's rule for its time table [1, D, 1, t] → [1, D, 1, columns]: the first `columns`
    when shorter (PaSST cuts so at run time), bilinear stretching when longer."""
    if columns <= table.shape[TIME_AXIS]:
        return table.narrow(TIME_AXIS, 0, columns)
    return interpolate_axis(table, columns, TIME_AXIS)


def square_grid(num_patches: int) -> tuple[int, int]:
    """The (side, side) grid of an image ViT with `num_patches` patches (576 → (24, 24))."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"{num_patches} patch positions do not form a square grid")
    return side, side


def factorize_grid(
    grid: torch.Tensor, centered: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factorized tables of a positional grid [1, D, f, t]: freq [f, D] and time [t, D].

    freq = the grid's mean over time, time = its mean over frequency (ElasticAST's tables).
    centered: time also minus the grid's grand mean, so that freq[i] + time[j] is the best
    additive fit and reproduces any grid of the form a[i] + b[j] exactly (without it the sum
    holds the grand mean twice).
    """
    freq = grid.mean(dim=TIME_AXIS)[0].T  # [f, D]
    time = grid.mean(dim=FREQUENCY_AXIS)  # [1, D, t]
    if centered:
        time = time - grid.mean(dim=(2, 3))[..., None]
    return freq, time[0].T  # [f, D], [t, D]


def resample_table(table: torch.Tensor, size: int, step: float | None) -> torch.Tensor:
    """Table [n, D] → [size, D].

    step: source positions per target position (the target stride over the source stride,
        e.g. 16/10 from a 10/10 AST grid): linear interpolation at each target patch's position,
        the last source value repeated beyond the source's end.
        None (no physical meaning, an ImageNet grid): AST's rule, the center cut when smaller,
        bilinear stretching when larger.
    """
    if step is None:
        column = table.T[None, :, :, None]  # [1, D, n, 1]
        return resize_axis(column, size, FREQUENCY_AXIS)[0, :, :, 0].T
    position = torch.arange(size, dtype=torch.float32, device=table.device) * step
    position = position.clamp(max=table.shape[0] - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=table.shape[0] - 1)
    weight = (position - low).to(table.dtype)[:, None]
    return table[low] * (1 - weight) + table[high] * weight
