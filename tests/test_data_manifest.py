"""manifest.yaml: round trip, lookup of datafiles and stats per split and fold, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from data_fixtures import no_progress  # noqa: F401

from fastast_cli.data.datafile import write_labels_csv
from fastast_cli.data.manifest import Fold, Manifest, load_manifest, write_manifest
from fastast_cli.errors import FastASTError


def _manifest(root: Path, folds: bool) -> Manifest:
    write_labels_csv(root / "labels.csv", ["/m/x", "/m/y"], ["x", "y"])
    data = root / "datafiles"
    fold_map = (
        {
            k: Fold(data / f"fold{k}_train.json", data / f"fold{k}_eval.json", -6.0 - k, 5.0 + k)
            for k in (1, 2)
        }
        if folds
        else {}
    )
    splits = {} if folds else {"train": data / "train.json", "valid": data / "valid.json"}
    return Manifest(
        path=root / "manifest.yaml",
        dataset="demo",
        sample_rate=16000,
        num_mel_bins=128,
        target_length=200,
        labels_csv=root / "labels.csv",
        mean=-6.5,
        std=3.9,
        splits=splits,
        folds=fold_map,
        default_fold=1 if folds else None,
        counts={"train": 3},
        extras={"background_noise": data / "noise.json"},
        label_names=["x", "y"],
    )


def test_round_trip_with_relative_paths(tmp_path: Path) -> None:
    write_manifest(_manifest(tmp_path, folds=False))
    raw = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    assert raw["splits"] == {"train": "datafiles/train.json", "valid": "datafiles/valid.json"}
    assert raw["labels_csv"] == "labels.csv" and raw["num_classes"] == 2
    for handle in (tmp_path, tmp_path / "manifest.yaml"):
        m = load_manifest(handle)
        assert m.dataset == "demo" and m.sample_rate == 16000 and m.target_length == 200
        assert m.datafile("train") == (tmp_path / "datafiles" / "train.json").resolve()
        assert m.norm_stats() == (-6.5, 3.9)
        assert m.label_names == ["x", "y"] and m.label_mids == ["/m/x", "/m/y"]
        assert m.eval_split == "valid" and m.counts == {"train": 3}
        assert m.extra_path("background_noise") == (tmp_path / "datafiles" / "noise.json").resolve()


def test_folds_give_their_own_datafiles_and_stats(tmp_path: Path) -> None:
    write_manifest(_manifest(tmp_path, folds=True))
    m = load_manifest(tmp_path)
    assert m.datafile("train").name == "fold1_train.json"  # default fold
    assert m.datafile("eval", fold=2).name == "fold2_eval.json"
    assert m.norm_stats() == (-7.0, 6.0) and m.norm_stats(2) == (-8.0, 7.0)
    assert m.split_names == ["eval", "train"] and m.eval_split == "eval"
    with pytest.raises(FastASTError, match="fold 7"):
        m.datafile("train", fold=7)
    with pytest.raises(FastASTError, match="train and eval"):
        m.datafile("valid", fold=1)


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FastASTError, match="no manifest"):
        load_manifest(tmp_path)
    write_manifest(_manifest(tmp_path, folds=False))
    m = load_manifest(tmp_path)
    with pytest.raises(FastASTError, match="no split 'test'"):
        m.datafile("test")
    raw = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    del raw["target_length"]
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(FastASTError, match="target_length"):
        load_manifest(tmp_path)


def test_a_damaged_manifest_is_a_clear_error(tmp_path) -> None:
    import pytest

    from fastast_cli.data.manifest import load_manifest
    from fastast_cli.errors import FastASTError

    (tmp_path / "manifest.yaml").write_text("format: 1\ndataset: x\nfolds:\n  1: {train: a}\n")
    with pytest.raises(FastASTError, match="damaged|missing|no "):
        load_manifest(tmp_path)
