"""ASTDataset over AST JSON datafiles: targets, features, augmentation switches, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from data_fixtures import no_progress, write_tone  # noqa: F401

import fastast_cli.data.dataset as dataset_module
from fastast_cli.data import ASTDataset, load_mono, waveform_to_fbank
from fastast_cli.data.audio import read_audio
from fastast_cli.data.datafile import read_datafile
from fastast_cli.data.features import fbank, normalize, pad_or_cut
from fastast_cli.errors import FastASTError

MIDS = ["/m/a", "/m/b", "/m/c"]


@pytest.fixture()
def small_set(tmp_path: Path) -> tuple[Path, Path]:
    """4 clips (absolute paths, AST style; one 44.1 kHz stereo) with single and multi labels."""
    labels = tmp_path / "labels.csv"
    labels.write_text('index,mid,display_name\n0,/m/a,"A, the first"\n1,/m/b,B\n2,/m/c,C\n')
    clips = [
        write_tone(
            tmp_path / "audio" / f"c{i}.wav", seconds=0.4 + 0.1 * i, freq=300 + 200 * i, seed=i
        )
        for i in range(3)
    ]
    clips.append(
        write_tone(
            tmp_path / "audio" / "stereo.wav", sample_rate=44100, channels=2, seconds=0.5, freq=800
        )
    )
    rows = [
        {"wav": str(clips[0]), "labels": "/m/a"},
        {"wav": str(clips[1]), "labels": "/m/b,/m/c"},
        {"wav": str(clips[2]), "labels": "/m/c"},
        {"wav": str(clips[3]), "labels": "/m/a,/m/c"},
    ]
    datafile = tmp_path / "train.json"
    datafile.write_text(json.dumps({"data": rows}))
    return datafile, labels


def _make(datafile: Path, labels: Path, **options: object) -> ASTDataset:
    return ASTDataset(datafile, labels, target_length=64, mean=-5.0, std=4.0, **options)


def test_items_are_normalized_fbank_and_multi_hot_targets(small_set: tuple[Path, Path]) -> None:
    ds = _make(*small_set)
    assert len(ds) == 4 and ds.num_classes == 3
    assert ds.label_names == ["A, the first", "B", "C"]
    features, target = ds[1]
    assert features.shape == (64, 128) and features.dtype == torch.float32
    assert target.dtype == torch.float32 and target.tolist() == [0.0, 1.0, 1.0]
    assert ds[3][1].tolist() == [1.0, 0.0, 1.0]
    samples, rate = read_audio(ds.entries[3].wav)  # stereo 44.1 kHz: downmixed, resampled
    expected = waveform_to_fbank(samples, rate, target_length=64, mean=-5.0, std=4.0)
    assert torch.allclose(ds[3][0], expected, atol=1e-5)
    assert torch.equal(ds[0][0], ds[0][0])  # evaluation items are deterministic


def test_relative_wav_paths_resolve_against_the_datafile_folder(tmp_path: Path) -> None:
    write_tone(tmp_path / "data" / "audio" / "x.wav")
    (tmp_path / "data" / "lists").mkdir()
    datafile = tmp_path / "data" / "lists" / "d.json"
    datafile.write_text(json.dumps({"data": [{"wav": "../audio/x.wav", "labels": "/m/a"}]}))
    assert read_datafile(datafile)[0].wav == (tmp_path / "data" / "audio" / "x.wav").resolve()


def test_unknown_label_and_bad_datafile_are_clear_errors(
    small_set: tuple[Path, Path], tmp_path: Path
) -> None:
    datafile, labels = small_set
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"wav": "x.wav", "labels": "/m/zzz"}]}))
    with pytest.raises(FastASTError, match="/m/zzz"):
        _make(bad, labels)
    bad.write_text('{"items": []}')
    with pytest.raises(FastASTError, match="AST datafile"):
        _make(bad, labels)
    with pytest.raises(FastASTError, match="mixup"):
        _make(datafile, labels, mixup=1.5)


def test_augmentation_only_in_training(small_set: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    plain = _make(*small_set)
    evaluation = _make(*small_set, freqm=48, timem=20, mixup=1.0, noise=True)
    assert all(torch.equal(plain[i][0], evaluation[i][0]) for i in range(4))
    training = _make(*small_set, freqm=48, timem=20, noise=True, training=True)
    assert not torch.equal(training[0][0], training[0][0])  # fresh masks and noise every draw


def test_fbank_cache_computes_once_and_still_augments(
    small_set: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    ds = _make(*small_set, cache_dir=cache)
    first = [ds[i][0] for i in range(4)]
    assert ds.cache.count("fbank") == 4 and ds.cache.count("wave") == 0

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("audio was decoded although it is cached")

    monkeypatch.setattr(dataset_module, "load_mono", no_decoding)
    again = _make(*small_set, cache_dir=cache)
    assert all(torch.equal(a, again[i][0]) for i, a in enumerate(first))
    augmented = _make(*small_set, cache_dir=cache, freqm=48, timem=20, training=True)
    draws = [augmented[0][0] for _ in range(3)]
    assert not torch.equal(draws[0], draws[1]) or not torch.equal(draws[1], draws[2])
    assert ds.cache.count("fbank") == 4


def test_changed_clip_invalidates_its_cache_entry(
    small_set: tuple[Path, Path], tmp_path: Path
) -> None:
    datafile, labels = small_set
    ds = _make(datafile, labels, cache_dir=tmp_path / "cache")
    before = ds[0][0]
    write_tone(ds.entries[0].wav, seconds=0.9, freq=3000)  # new content, size and mtime
    after = ds[0][0]
    assert ds.cache.count("fbank") == 2  # a second entry: the old one is never read again
    assert not torch.allclose(before, after)
    expected = normalize(pad_or_cut(fbank(load_mono(ds.entries[0].wav)), 64), -5.0, 4.0)
    assert torch.allclose(after, expected, atol=1e-6)


def test_mixup_mixes_waveforms_and_labels(
    small_set: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_module, "sample_mixup_lambda", lambda: 0.7)
    torch.manual_seed(0)
    ds = _make(*small_set, mixup=1.0, training=True, cache_dir=tmp_path / "cache")
    waves = [load_mono(e.wav) for e in ds.entries]
    partners = set()
    for _ in range(12):
        features, target = ds[0]
        # find the partner whose mix reproduces the item
        for j, wave in enumerate(waves):
            mixed = ds.features_of(dataset_module.mix_waveforms(waves[0], wave, 0.7))
            if torch.allclose(features, normalize(mixed, -5.0, 4.0), atol=1e-4):
                partners.add(j)
                assert torch.allclose(target, 0.7 * ds.targets[0] + 0.3 * ds.targets[j])
                break
        else:
            raise AssertionError("item is not a λ=0.7 mix of clip 0 with any clip")
    assert len(partners) >= 2  # partners are drawn at random
    assert ds.cache.count("wave") >= 3  # mixup caches decoded waveforms, not fbanks
