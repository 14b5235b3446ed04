"""`prepare esc50` from the zip and from the folder: folds, labels, 16-kHz audio, stats, re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from data_fixtures import ESC_CATEGORIES, make_esc50_tree, no_progress, zip_tree  # noqa: F401
from typer.testing import CliRunner

from fastast_cli.data.audio import load_mono
from fastast_cli.data.datafile import read_datafile, read_labels_csv
from fastast_cli.data.features import FbankSums, fbank, pad_or_cut
from fastast_cli.data.manifest import load_manifest
from fastast_cli.data.prepare import prepare_esc50
from fastast_cli.data.prepare.conversion import single_thread
from fastast_cli.errors import FastASTError

CLASSES, FOLDS, PER_FOLD = 4, 5, 2


@pytest.fixture(scope="module")
def esc_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ESC-50-master.zip with 4 classes × 5 folds × 2 clips of 44.1-kHz audio."""
    base = tmp_path_factory.mktemp("esc")
    folder = make_esc50_tree(base, classes=CLASSES, folds=FOLDS, per_fold=PER_FOLD)
    return zip_tree(folder, base / "ESC-50-master.zip")


def _stats_of(datafile: Path, target_length: int) -> tuple[float, float]:
    total = FbankSums()
    with single_thread():
        for entry in read_datafile(datafile):
            total = total + FbankSums.of(pad_or_cut(fbank(load_mono(entry.wav)), target_length))
    return total.mean_std()


def test_prepare_from_zip_writes_folds_labels_and_16k_audio(esc_zip: Path, tmp_path: Path) -> None:
    report = prepare_esc50(esc_zip, tmp_path / "out")
    out = tmp_path / "out"
    per_fold = CLASSES * PER_FOLD
    for k in range(1, FOLDS + 1):
        assert report.counts[f"fold{k}_train"] == per_fold * (FOLDS - 1)
        assert report.counts[f"fold{k}_eval"] == per_fold
        eval_names = {e.wav.name for e in read_datafile(out / "datafiles" / f"fold{k}_eval.json")}
        train_names = {e.wav.name for e in read_datafile(out / "datafiles" / f"fold{k}_train.json")}
        assert {n.split("-")[0] for n in eval_names} == {str(k)}
        assert str(k) not in {n.split("-")[0] for n in train_names}
        assert not eval_names & train_names
    assert report.converted == CLASSES * FOLDS * PER_FOLD and report.in_place == 0
    labels = read_labels_csv(out / "class_labels_indices.csv")
    assert labels.mids == tuple(f"/m/07rwj{t:02d}" for t in range(CLASSES))
    assert list(labels.names) == ESC_CATEGORIES
    for entry in read_datafile(out / "datafiles" / "fold1_eval.json"):
        info = sf.info(str(entry.wav))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert entry.wav.is_relative_to((out / "audio_16k").resolve())
        assert entry.labels == (f"/m/07rwj{int(entry.wav.stem.split('-')[-1]):02d}",)
    raw = json.loads((out / "datafiles" / "fold1_eval.json").read_text())
    assert raw["data"][0]["wav"].startswith("../audio_16k/")  # portable relative paths
    m = load_manifest(out)
    assert (m.dataset, m.sample_rate, m.target_length, m.num_classes) == (
        "esc50",
        16000,
        512,
        CLASSES,
    )
    assert sorted(m.folds) == [1, 2, 3, 4, 5] and m.default_fold == 1
    for k in (1, 4):  # per-fold stats are those of the fold's own training split
        mean, std = _stats_of(m.datafile("train", k), 512)
        assert m.folds[k].mean == pytest.approx(mean, rel=1e-3)
        assert m.folds[k].std == pytest.approx(std, rel=1e-3)
    assert (out / "prepare.log").read_text().count("[skipped") == 1


def test_rerun_is_idempotent_and_skips_finished_work(esc_zip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare_esc50(esc_zip, out)
    wav = next((out / "audio_16k").iterdir())
    stamp = wav.stat().st_mtime_ns
    manifest = (out / "manifest.yaml").read_text()
    second = prepare_esc50(esc_zip, out)
    assert second.reused == CLASSES * FOLDS * PER_FOLD and second.converted == 0
    assert wav.stat().st_mtime_ns == stamp
    assert second.counts == first.counts
    assert (out / "manifest.yaml").read_text() == manifest
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))


def test_prepare_from_the_extracted_folder(esc_zip: Path, tmp_path: Path) -> None:
    folder = make_esc50_tree(tmp_path / "src", classes=CLASSES, folds=FOLDS, per_fold=PER_FOLD)
    from_folder = prepare_esc50(folder, tmp_path / "a")
    from_parent = prepare_esc50(tmp_path / "src", tmp_path / "b")  # the folder holding it works too
    assert from_folder.counts == from_parent.counts
    assert from_folder.counts["fold3_eval"] == CLASSES * PER_FOLD
    assert load_manifest(tmp_path / "a").folds[2].mean == pytest.approx(
        load_manifest(tmp_path / "b").folds[2].mean
    )


def test_wrong_layout_and_missing_meta_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "audio").mkdir(parents=True)
    with pytest.raises(FastASTError, match="meta/esc50.csv"):
        prepare_esc50(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FastASTError, match="does not exist"):
        prepare_esc50(tmp_path / "nope.zip", tmp_path / "out")
    with pytest.raises(FastASTError, match="--src"):
        prepare_esc50(None, tmp_path / "out")


def test_cli_prepare_esc50(esc_zip: Path, tmp_path: Path) -> None:
    from fastast_cli.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app, ["prepare", "esc50", "--src", str(esc_zip), "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "fold1_train" in result.stdout and "manifest" in result.stdout
    assert load_manifest(tmp_path / "o").counts["fold1_eval"] == CLASSES * PER_FOLD
    bad = runner.invoke(
        app,
        ["prepare", "esc50", "--src", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "x")],
    )
    assert bad.exit_code == 2
    assert "error:" in bad.stderr and "Traceback" not in bad.output + bad.stderr
    assert not (tmp_path / "x").exists()  # nothing written for a run that cannot start
