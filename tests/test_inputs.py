"""What input a model takes: the one waveform → fbank function (bit-identical to the four it
replaced) and its length policies, the one lookup of normalization stats with a fallback, and
evaluation refusing a model made for other fbanks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fastast_cli.data.audio import resample, to_mono
from fastast_cli.data.dataset import ASTDataset, NativeLengthDataset
from fastast_cli.data.elastic_features import elastic_features
from fastast_cli.data.features import (
    AST_NORM_STATS,
    SAMPLE_RATE,
    LengthPolicy,
    as_channels_first,
    raw_features,
    waveform_fbank,
    waveform_to_fbank,
)
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.evaluate import (
    evaluate_lengths,
    evaluate_model,
    input_spec_on,
)
from fastast_cli.inference.clips import Predictor, clip_features, input_spec
from fastast_cli.inference.stream import window_features
from fastast_cli.models.ast import build_model
from fastast_cli.models.elastic import build_elastic
from fastast_cli.models.inputs import InputSpec, resolved_input
from fastast_cli.models.reduction.settings import MergeSettings, capped_note, merges_fixed_grid
from fastast_cli.models.teachers import CNNClassifier, CNNConfig

# Outputs of features.raw_features / waveform_to_fbank, elastic_features.elastic_features,
# clips.clip_features and the datasets' features_of / features_at, recorded with the code before
# they became `waveform_fbank` (tests/fixtures/fbank/record_old_features.py.txt).
OLD = Path(__file__).parent / "fixtures" / "fbank" / "old_features.pt"
BINS, T, STATS = 32, 40, (-4.0, 3.0)


def _waves() -> dict[str, tuple[object, int]]:
    """The recorded waveforms: mono, stereo [C, S], [S, C], shorter than one frame, < 1 patch."""
    g = torch.Generator().manual_seed(0)
    return {
        "mono16k_0.7s": (torch.randn(11200, generator=g) * 0.1, 16000),
        "stereo44k_0.5s": (torch.randn(2, 22050, generator=g) * 0.1, 44100),
        "samples_channels22k_0.3s": (torch.randn(6615, 2, generator=g).numpy() * 0.1, 22050),
        "tiny_300": (torch.randn(300, generator=g) * 0.1, 16000),
        "short_0.1s": (torch.randn(1600, generator=g) * 0.1, 16000),
    }


def _new_outputs() -> dict[str, torch.Tensor]:
    """The same outputs, all through `waveform_fbank` now."""
    out: dict[str, torch.Tensor] = {}
    for name, (wave, rate) in _waves().items():
        out[f"raw/{name}/T40"] = raw_features(wave, rate, target_length=T, num_mel_bins=BINS)
        out[f"norm/{name}/T40"] = waveform_to_fbank(wave, rate, target_length=T, mean=STATS[0],
                                                    std=STATS[1], num_mel_bins=BINS)
        for q in (1.0, 2.0, 1.5):
            out[f"elastic/{name}/q{q}"] = elastic_features(
                wave, rate, mean=STATS[0], std=STATS[1], resolution=q, num_mel_bins=BINS)
            out[f"elastic/{name}/q{q}/max30"] = elastic_features(
                wave, rate, mean=STATS[0], std=STATS[1], resolution=q, max_frames=30,
                num_mel_bins=BINS)
        for native in (False, True):
            spec = InputSpec(T, BINS, native, *STATS)
            out[f"clip/{name}/native{native}"] = clip_features(wave, rate, spec)
        mono = resample(to_mono(as_channels_first(wave)), rate, SAMPLE_RATE)
        dataset = SimpleNamespace(num_mel_bins=BINS, target_length=T)
        out[f"dataset/{name}"] = ASTDataset.features_of(dataset, mono)
        for fixed in (False, True):
            dataset.length = InputSpec(T, BINS, not fixed).length_policy()
            for q in (1.0, 2.0):
                out[f"native/{name}/fixed{fixed}/q{q}"] = NativeLengthDataset.features_at(
                    dataset, mono, q)
    return out


def test_waveform_fbank_is_bit_identical_to_the_four_functions_it_replaced(one_thread) -> None:
    # recorded with one thread: a kernel's float sums may round differently with more
    old = torch.load(OLD, weights_only=True)
    new = _new_outputs()
    assert new.keys() == old.keys()
    for key, expected in old.items():
        assert new[key].shape == expected.shape, key
        assert torch.equal(new[key], expected), key
    # the recorded cases cover padding (tiny, short), cutting (mono 0.7 s → 68 frames > 40)
    # and native lengths below one patch (tiny: 1 frame → 16)
    assert old["raw/tiny_300/T40"][1:].abs().sum() == 0
    assert old["elastic/tiny_300/q1.0"].shape == (16, BINS)
    assert old["elastic/mono16k_0.7s/q2.0"].shape == (34, BINS)


def test_length_policies_pad_cut_and_keep() -> None:
    features = torch.arange(50 * 2, dtype=torch.float32).reshape(50, 2)
    assert LengthPolicy.fixed(64).fit(features).shape == (64, 2)
    assert torch.equal(LengthPolicy.fixed(30).fit(features), features[:30])
    assert LengthPolicy.native(30).fit(features).shape == (30, 2)
    assert LengthPolicy.native().fit(features) is features
    assert LengthPolicy.native().fit(features[:5]).shape == (16, 2)  # one patch at least
    assert LengthPolicy.at_least(40).fit(features) is features  # never cut
    padded = LengthPolicy.at_least(64).fit(features)
    assert padded.shape == (64, 2) and padded[50:].abs().sum() == 0


def test_frame_shift_and_stats_are_parameters() -> None:
    wave = torch.randn(16000, generator=torch.Generator().manual_seed(1)) * 0.1
    at_10 = waveform_fbank(wave, 16000, length=LengthPolicy.native(), num_mel_bins=BINS)
    at_40 = waveform_fbank(wave, 16000, length=LengthPolicy.native(), num_mel_bins=BINS,
                           frame_shift_ms=40.0)
    assert at_10.shape == (98, BINS) and at_40.shape == (25, BINS)
    normalized = waveform_fbank(wave, 16000, length=LengthPolicy.native(), num_mel_bins=BINS,
                                stats=STATS)
    assert torch.allclose(normalized, (at_10 - STATS[0]) / (2 * STATS[1]))


def test_input_spec_says_length_policy_and_teacher_view() -> None:
    fixed = InputSpec(T, BINS, False)
    native = InputSpec(T, BINS, True)
    assert fixed.length_policy() == LengthPolicy(T, T) and fixed.teacher_frames() == T
    assert native.length_policy() == LengthPolicy(16, T) and native.teacher_frames() is None
    with pytest.raises(ValueError):
        _ = fixed.stats


@pytest.mark.parametrize("builder", [build_model, build_elastic])
def test_one_stats_lookup_with_the_fallback_as_a_parameter(builder, one_thread) -> None:
    model = builder("tiny", 3, depth=1, target_length=64, num_mel_bins=BINS)
    manifest = SimpleNamespace(norm_stats=lambda fold: (-6.0, 5.0), num_mel_bins=BINS)
    never = SimpleNamespace(num_mel_bins=BINS)  # no norm_stats: not asked when stats are stored
    audioset = AST_NORM_STATS["audioset"]
    # no stats stored: evaluation falls back to the dataset's, predict to AudioSet's (with a note)
    assert input_spec_on(model, manifest, None).stats == (-6.0, 5.0)
    assert input_spec_on(model, manifest, None).stats_note is None
    spec = input_spec(model)
    assert spec.stats == audioset and "AudioSet" in spec.stats_note
    assert spec.native_length == (builder is build_elastic) and spec.target_length == 64
    # stored stats win over any fallback, and their own note travels with them
    model.meta = {"mean": -1.5, "std": 2.5, "stats_note": "assumed"}
    for resolved in (input_spec_on(model, never, None), input_spec(model),
                     resolved_input(model, (0.0, 1.0), "unused")):
        assert resolved.stats == (-1.5, 2.5) and resolved.stats_note == "assumed"


def test_evaluate_refuses_a_model_of_other_mel_bins_in_one_line(small_demo, one_thread) -> None:
    manifest = load_manifest(small_demo)
    model = build_model("tiny", manifest.num_classes, depth=1, num_mel_bins=64,
                        target_length=manifest.target_length).eval()
    with pytest.raises(FastASTError, match="64 mel bins .* prepared with 128"):
        evaluate_model(model, manifest, "tiny")
    with pytest.raises(FastASTError, match="64 mel bins"):
        evaluate_lengths(model, manifest, [1.0], [1.0])


def test_one_capped_merging_note_asks_the_model(one_thread) -> None:
    ast = build_model("tiny", 3, depth=2, target_length=200, fstride=16, tstride=16)  # 96 patches
    elastic = build_elastic("tiny", 3, depth=2, target_length=200)
    cnn = CNNClassifier(CNNConfig(3, "mobilenetv3-small"))
    assert [merges_fixed_grid(m) for m in (ast, elastic, cnn)] == [True, False, False]
    capped = ("note: r=60 is more than 96 patches allow: block 1 merges only 48 tokens (half of "
              "those left), and so on; the merging is capped")
    assert capped_note(ast, 60) == capped
    assert capped_note(ast) is None  # no settings: no merging
    MergeSettings(60, "constant").apply(ast)
    assert capped_note(ast) == capped  # the model's own settings
    assert capped_note(ast, 0) is None and capped_note(ast, 8) is None  # r = 0; within the cap
    assert capped_note(elastic, 60) is None and capped_note(cnn, 60) is None


def test_whole_clip_and_window_policies_come_from_the_spec() -> None:
    fixed, native = InputSpec(T, BINS, False), InputSpec(T, BINS, True)
    assert fixed.length_policy(whole_clip=True) == LengthPolicy.at_least(T)
    assert native.length_policy(whole_clip=True) == LengthPolicy.native()
    wave = torch.randn(16000, generator=torch.Generator().manual_seed(2)) * 0.1
    coarse = InputSpec(T, BINS, True, *STATS, frame_shift_ms=40.0)
    assert clip_features(wave, 16000, coarse).shape == (25, BINS)  # the spec's frame shift
    assert window_features(wave[:8000], coarse).shape == (16, BINS)  # 12 frames → one patch
    assert window_features(wave, replace(coarse, native_length=False)).shape == (T, BINS)
    with pytest.raises(FastASTError, match="every 40 ms"):  # windows are placed on 10-ms frames
        Predictor(torch.nn.Identity(), coarse, hop=T // 2)
