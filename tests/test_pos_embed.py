"""Positional-embedding adaptation: exact center cuts, interpolation that keeps ramps linear."""

import pytest
import torch

from fastast_cli.models.pos_embed import resample_pos_embed, square_grid

PREFIX = torch.tensor([[[-1.0, -2.0], [-3.0, -4.0]]])  # [1, 2, 2]: CLS and DIST


def indexed_pos_embed(f_dim: int, t_dim: int) -> torch.Tensor:
    """pos_embed [1, 2 + f·t, 2] whose channels hold each patch's (frequency, time) index."""
    f_index, t_index = torch.meshgrid(
        torch.arange(f_dim, dtype=torch.float32),
        torch.arange(t_dim, dtype=torch.float32),
        indexing="ij",
    )
    patches = torch.stack([f_index, t_index], dim=-1).reshape(1, f_dim * t_dim, 2)
    return torch.cat([PREFIX, patches], dim=1)


def as_grid(pos_embed: torch.Tensor, f_dim: int, t_dim: int) -> torch.Tensor:
    """Patch part of pos_embed as [f, t, D] (frequency-major)."""
    return pos_embed[0, 2:].reshape(f_dim, t_dim, -1)


def interpolated_ramp(source: int, target: int) -> torch.Tensor:
    """Where bilinear (align_corners=False) sampling of positions 0..source-1 lands: [target]."""
    centers = (torch.arange(target, dtype=torch.float64) + 0.5) * source / target - 0.5
    return centers.clamp(0, source - 1).float()


def test_equal_grids_return_the_same_values():
    pos_embed = torch.randn(1, 2 + 12 * 101, 8)
    adapted = resample_pos_embed(pos_embed, (12, 101), (12, 101))
    assert torch.equal(adapted, pos_embed)


def test_time_cut_keeps_the_center_slice():
    # AudioSet 1024 frames (12 × 101) → ESC-50 512 frames (12 × 50): time columns 25..74.
    adapted = resample_pos_embed(indexed_pos_embed(12, 101), (12, 101), (12, 50))
    grid = as_grid(adapted, 12, 50)
    assert adapted.shape == (1, 2 + 12 * 50, 2)
    assert torch.equal(grid[..., 1], torch.arange(25.0, 75.0).expand(12, 50))
    assert torch.equal(grid[..., 0], torch.arange(12.0)[:, None].expand(12, 50))
    assert torch.equal(adapted[:, :2], PREFIX)


def test_speech_commands_cut_and_frequency_cut():
    # 12 × 101 → 12 × 12 (128 frames): columns 50 - 6 = 44 .. 55.
    grid = as_grid(resample_pos_embed(indexed_pos_embed(12, 101), (12, 101), (12, 12)), 12, 12)
    assert torch.equal(grid[0, :, 1], torch.arange(44.0, 56.0))
    # Frequency 12 → 10 rows: 6 - 5 = 1 .. 10.
    grid = as_grid(resample_pos_embed(indexed_pos_embed(12, 101), (12, 101), (10, 101)), 10, 101)
    assert torch.equal(grid[:, 0, 0], torch.arange(1.0, 11.0))
    assert torch.equal(grid[0, :, 1], torch.arange(101.0))


def test_odd_sizes_cut_from_floor_of_half():
    # time 7 → 4: start 7 // 2 - 4 // 2 = 1; frequency 5 → 3: start 2 - 1 = 1.
    grid = as_grid(resample_pos_embed(indexed_pos_embed(5, 7), (5, 7), (3, 4)), 3, 4)
    assert torch.equal(grid[0, :, 1], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(grid[:, 0, 0], torch.tensor([1.0, 2.0, 3.0]))


def test_time_interpolation_keeps_a_linear_ramp():
    slope, offset = 3.0, 1.0
    pos_embed = indexed_pos_embed(4, 10)
    pos_embed[0, 2:, 1] = slope * pos_embed[0, 2:, 1] + offset
    grid = as_grid(resample_pos_embed(pos_embed, (4, 10), (4, 25)), 4, 25)
    expected = slope * interpolated_ramp(10, 25) + offset
    for row in range(4):
        torch.testing.assert_close(grid[row, :, 1], expected, rtol=0, atol=1e-5)
    # Interior steps are all equal (the ramp stays linear); the frequency axis is untouched.
    steps = grid[0, 2:-2, 1].diff()
    torch.testing.assert_close(steps, torch.full_like(steps, slope * 10 / 25), rtol=0, atol=1e-5)
    assert torch.equal(grid[..., 0], torch.arange(4.0)[:, None].expand(4, 25))


def test_frequency_grows_while_time_shrinks():
    grid = as_grid(resample_pos_embed(indexed_pos_embed(4, 10), (4, 10), (6, 4)), 6, 4)
    torch.testing.assert_close(grid[:, 0, 0], interpolated_ramp(4, 6), rtol=0, atol=1e-6)
    assert torch.equal(grid[0, :, 1], torch.tensor([3.0, 4.0, 5.0, 6.0]))  # 5 - 2 = 3


def test_deit_square_grid_to_audioset_grid():
    # DeiT-384 24 × 24 → AST 12 × 101: time interpolated 24 → 101, frequency rows 6..17 kept.
    adapted = resample_pos_embed(indexed_pos_embed(24, 24), square_grid(576), (12, 101))
    grid = as_grid(adapted, 12, 101)
    assert adapted.shape == (1, 2 + 1212, 2)
    assert torch.equal(grid[:, 0, 0], torch.arange(6.0, 18.0))
    torch.testing.assert_close(grid[5, :, 1], interpolated_ramp(24, 101), rtol=0, atol=1e-5)
    assert torch.equal(adapted[:, :2], PREFIX)


def test_dtype_is_kept():
    pos_embed = torch.randn(1, 2 + 4 * 5, 3).to(torch.bfloat16)
    assert resample_pos_embed(pos_embed, (4, 5), (4, 9)).dtype == torch.bfloat16


def test_wrong_length_and_non_square_grids_are_refused():
    with pytest.raises(ValueError, match=r"12×101"):
        resample_pos_embed(torch.zeros(1, 2 + 100, 4), (12, 101), (12, 50))
    assert square_grid(196) == (14, 14)
    with pytest.raises(ValueError, match="square"):
        square_grid(577)
