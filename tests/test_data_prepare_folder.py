"""`prepare folder`: class subfolders → labels and stratified, seeded train/valid/test splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from data_fixtures import make_class_folders, no_progress, write_tone  # noqa: F401
from typer.testing import CliRunner

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
    assert m.dataset == "folder" and m.eval_split == "valid"
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


def _prepared(out: Path) -> dict[str, str]:
    """Text of the labels CSV and every datafile of a prepared folder."""
    files = [out / "class_labels_indices.csv", *sorted((out / "datafiles").glob("*.json"))]
    return {f.name: f.read_text() for f in files}


@pytest.mark.parametrize("where", ["src", "src/cat", "src/cat/deeper"])
def test_a_second_run_into_the_source_is_identical(tmp_path: Path, where: str) -> None:
    src = make_class_folders(tmp_path / "src", {"cat": 6, "dog": 6})
    for name in ("cat", "dog"):  # 8-kHz clips: converted into OUT/audio_16k/ by the first run
        write_tone(src / name / "low_rate.wav", sample_rate=8000, seconds=0.5)
    out = tmp_path / where
    first = prepare_folder(src, out, seed=0)
    datafiles = _prepared(out)
    second = prepare_folder(src, out, seed=0)
    assert first.counts == second.counts == {"train": 10, "valid": 2, "test": 2}
    assert _prepared(out) == datafiles
    assert list(read_labels_csv(out / "class_labels_indices.csv").names) == ["cat", "dog"]
    assert second.notes == first.notes and second.reused == 14


def test_tiny_classes_get_warnings_naming_the_empty_splits(tmp_path: Path) -> None:
    from fastast_cli.cli import app

    src = make_class_folders(tmp_path / "src", {"a": 4, "b": 3, "one": 1})
    (src / "empty").mkdir()
    (src / "empty" / "readme.txt").write_text("no audio here")
    (src / "broken").mkdir()
    (src / "broken" / "x.wav").write_bytes(b"not audio")
    report = prepare_folder(src, tmp_path / "out")
    assert report.counts == {"train": 8, "valid": 0, "test": 0}
    assert any("valid, test" in w and "empty" in w for w in report.warnings)
    assert any("classes have no readable clip" in w and "broken" in w for w in report.warnings)
    notes = " | ".join(report.notes)
    assert "hold no audio and were left out: empty" in notes
    assert "1 classes have a single clip" in notes and ": one" in notes
    assert "valid, test: no clip" in notes and "largest class: 4 clips" in notes
    result = CliRunner().invoke(
        app, ["prepare", "folder", "--src", str(src), "--out", str(tmp_path / "o2"), "--quiet"]
    )
    assert result.exit_code == 0
    assert "warning: empty datafile(s): valid, test" in " ".join(result.stderr.split())


def test_every_file_unreadable_names_the_skipped_files(tmp_path: Path) -> None:
    from fastast_cli.cli import app

    for name in ("a", "b"):
        (tmp_path / "src" / name).mkdir(parents=True)
        (tmp_path / "src" / name / f"bad_{name}.wav").write_bytes(b"RIFF junk")
    result = CliRunner().invoke(
        app, ["prepare", "folder", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o")]
    )
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "no usable training clip" in message and "bad_a.wav, bad_b.wav" in message
    log = (tmp_path / "o" / "prepare.log").read_text()
    assert "bad_a.wav" in log and "bad_b.wav" in log
