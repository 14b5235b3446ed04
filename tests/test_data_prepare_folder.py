"""`prepare folder`: class subfolders → labels and stratified, seeded train/valid/test splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from data_fixtures import make_class_folders, no_progress  # noqa: F401

from fastast_cli.data.datafile import read_datafile, read_labels_csv
from fastast_cli.data.manifest import load_manifest
from fastast_cli.data.prepare import prepare_folder
from fastast_cli.errors import FastASTError

CLASSES = {"cat": 10, "dog barking": 10, "rain": 20}


def _split_classes(out: Path, split: str) -> Counter:
    return Counter(e.wav.parent.name for e in read_datafile(out / "datafiles" / f"{split}.json"))


def test_stratified_split_by_ratio(tmp_path: Path) -> None:
    src = make_class_folders(tmp_path / "src", CLASSES)
    report = prepare_folder(src, tmp_path / "out", ratios=(0.8, 0.1, 0.1), seed=0)
    assert report.counts == {"train": 32, "valid": 4, "test": 4}
    assert _split_classes(tmp_path / "out", "train") == {"cat": 8, "dog barking": 8, "rain": 16}
    assert _split_classes(tmp_path / "out", "valid") == {"cat": 1, "dog barking": 1, "rain": 2}
    assert _split_classes(tmp_path / "out", "test") == {"cat": 1, "dog barking": 1, "rain": 2}
    labels = read_labels_csv(tmp_path / "out" / "class_labels_indices.csv")
    assert list(labels.names) == ["cat", "dog barking", "rain"]
    assert labels.mids == ("/fastast/cat", "/fastast/dog_barking", "/fastast/rain")
    m = load_manifest(tmp_path / "out")
    assert m.target_length == 48  # 0.5-s clips: 48 frames
    assert m.dataset == "folder" and m.eval_split == "test"  # reported on test
    assert m.selection_split == "valid"  # best.pt chosen on valid
    names = {split: {e.wav for e in read_datafile(m.datafile(split))} for split in m.split_names}
    assert not names["train"] & names["valid"] and not names["train"] & names["test"]


def test_seed_decides_the_split_and_zero_ratio_drops_a_split(tmp_path: Path) -> None:
    src = make_class_folders(tmp_path / "src", CLASSES)

    def valid_files(seed: int, out: str) -> set[str]:
        prepare_folder(src, tmp_path / out, seed=seed)
        return {
            e.wav.name + e.wav.parent.name
            for e in read_datafile(tmp_path / out / "datafiles" / "valid.json")
        }

    assert valid_files(1, "a") == valid_files(1, "b")
    assert valid_files(1, "a") != valid_files(2, "c")
    report = prepare_folder(src, tmp_path / "d", ratios=(0.75, 0.25, 0.0), target_length=100)
    assert report.counts == {"train": 29, "valid": 11}  # 2.5 → 3 per small class (half up)
    assert load_manifest(tmp_path / "d").target_length == 100


def test_wrong_layout_and_ratios(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    with pytest.raises(FastASTError, match="one subfolder per class"):
        prepare_folder(tmp_path / "flat", tmp_path / "out")
    src = make_class_folders(tmp_path / "src", {"a": 2})
    with pytest.raises(FastASTError, match="ratios"):
        prepare_folder(src, tmp_path / "out", ratios=(0.0, 0.5, 0.5))


def test_an_output_folder_inside_the_source_is_not_a_class(tmp_path: Path) -> None:
    src = make_class_folders(tmp_path / "src", CLASSES)
    prepare_folder(src, src / "prepared", seed=0)
    report = prepare_folder(src, src / "prepared", seed=0)  # its audio_16k/ holds wavs now
    assert sum(report.counts.values()) == 40
    labels = read_labels_csv(src / "prepared" / "class_labels_indices.csv")
    assert list(labels.names) == ["cat", "dog barking", "rain"]
