"""Augmentation: SpecAugment mask widths, mixup arithmetic, Speech Commands noise + roll."""

from __future__ import annotations

import statistics

import pytest
import torch
from data_fixtures import no_progress  # noqa: F401

from fastast_cli.data.augment import (
    mask_band,
    mix_targets,
    mix_waveforms,
    noise_and_roll,
    sample_mixup_lambda,
    spec_augment,
)


def _band(mask: torch.Tensor) -> tuple[int, int]:
    """(start, width) of the single run of True in a 1-D bool mask; asserts it is contiguous."""
    idx = torch.nonzero(mask).flatten()
    if idx.numel() == 0:
        return 0, 0
    assert torch.equal(idx, torch.arange(int(idx[0]), int(idx[-1]) + 1)), "mask is not one band"
    return int(idx[0]), idx.numel()


def test_spec_augment_masks_one_band_each_within_the_widths() -> None:
    torch.manual_seed(0)
    base = torch.rand(100, 128) + 1.0  # no zeros of its own
    freq_widths, time_widths = [], []
    for _ in range(300):
        out = spec_augment(base, freqm=24, timem=30)
        zero = out == 0
        columns, rows = zero.all(dim=0), zero.all(dim=1)
        _, fw = _band(columns)
        _, tw = _band(rows)
        # every zero lies in the frequency band or in the time band: nothing else is touched
        assert torch.equal(zero, columns[None, :] | rows[:, None])
        freq_widths.append(fw)
        time_widths.append(tw)
    assert torch.equal(base, base.clone())  # the input is left alone
    assert max(freq_widths) == 24 and min(freq_widths) == 0
    assert max(time_widths) == 30 and min(time_widths) == 0
    assert 9 < statistics.mean(freq_widths) < 15  # uniform on 0..24: mean 12


def test_mask_band_reports_start_and_width_and_caps_at_the_axis() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.ones(20, 8)
    start, width = mask_band(x, 1, 50, g)
    assert 0 <= width <= 8 and 0 <= start <= 8 - width
    assert torch.count_nonzero(x[:, start : start + width]) == 0
    assert torch.count_nonzero(x) == 20 * (8 - width)
    assert spec_augment(x, 0, 0).equal(x)


def test_mixup_lambda_is_beta_10_10() -> None:
    torch.manual_seed(0)
    draws = [sample_mixup_lambda() for _ in range(4000)]
    assert all(0 < d < 1 for d in draws)
    assert statistics.mean(draws) == pytest.approx(0.5, abs=0.01)
    assert statistics.pstdev(draws) == pytest.approx((100 / (400 * 21)) ** 0.5, abs=0.01)  # 0.109


def test_mixup_label_arithmetic() -> None:
    single = mix_targets(torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0]), 0.7)
    assert torch.allclose(single, torch.tensor([0.7, 0.0, 0.3]))
    multi = mix_targets(torch.tensor([1.0, 1, 0]), torch.tensor([0, 1.0, 1]), 0.7)
    assert torch.allclose(multi, torch.tensor([0.7, 1.0, 0.3]))
    same = mix_targets(torch.tensor([0, 1.0]), torch.tensor([0, 1.0]), 0.42)
    assert torch.allclose(same, torch.tensor([0.0, 1.0]))


def test_mix_waveforms_fits_the_partner_to_the_first_clip() -> None:
    first, longer, shorter = torch.randn(1000) + 0.3, torch.randn(1500), torch.randn(400) - 0.2
    mixed = mix_waveforms(first, longer, 0.6)
    assert mixed.shape == (1000,)
    cut = longer[:1000]
    assert torch.allclose(mixed, 0.6 * (first - first.mean()) + 0.4 * (cut - cut.mean()), atol=1e-6)
    padded = torch.cat([shorter, torch.zeros(600)])
    mixed = mix_waveforms(first, shorter, 0.6)
    assert torch.allclose(
        mixed, 0.6 * (first - first.mean()) + 0.4 * (padded - padded.mean()), atol=1e-6
    )


def test_noise_and_roll_adds_at_most_a_tenth_and_rolls_within_ten_frames() -> None:
    torch.manual_seed(3)
    x = torch.randn(128, 16)
    shifts = []
    for _ in range(200):
        out = noise_and_roll(x)
        assert out.shape == x.shape
        matches = [
            s
            for s in range(-10, 10)
            if bool(
                ((out - torch.roll(x, s, 0)) >= 0).all()
                and ((out - torch.roll(x, s, 0)) < 0.1).all()
            )
        ]
        assert len(matches) == 1
        shifts.append(matches[0])
    assert min(shifts) == -10 and max(shifts) == 9  # randint(-10, 10): high end excluded
