"""`prepare speechcommands`: official split from the two lists, AST's 35 labels, noise aside."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import SC_WORDS, make_speechcommands_tree, no_progress, tar_tree  # noqa: F401

from fastast_cli.data.datafile import read_datafile, read_labels_csv
from fastast_cli.data.manifest import load_manifest
from fastast_cli.data.prepare import SPEECHCOMMANDS_LABELS, prepare_speechcommands
from fastast_cli.errors import FastASTError

AST_ORDER = [
    "backward",
    "follow",
    "five",
    "bed",
    "zero",
    "on",
    "learn",
    "two",
    "house",
    "tree",
    "dog",
    "stop",
    "seven",
    "eight",
    "down",
    "six",
    "forward",
    "cat",
    "right",
    "visual",
    "four",
    "wow",
    "no",
    "nine",
    "off",
    "three",
    "left",
    "marvin",
    "yes",
    "up",
    "sheila",
    "happy",
    "bird",
    "go",
    "one",
]


@pytest.fixture(scope="module")
def sc_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sc")
    tree = make_speechcommands_tree(base / "tree")
    return tar_tree(tree, base / "speech_commands_v0.02.tar.gz")


def test_official_split_labels_and_background_noise(sc_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = prepare_speechcommands(sc_archive, out)
    per_word = 5
    assert report.counts["valid"] == len(SC_WORDS)  # one listed per word
    assert report.counts["test"] == len(SC_WORDS)  # one per word; the extra listed clip is missing
    assert report.counts["train"] == len(SC_WORDS) * (per_word - 2)
    assert len(report.missing) == 1 and report.missing[0].endswith("deadbeef_nohash_0.wav")
    assert report.in_place == len(SC_WORDS) * per_word + 2 and report.converted == 0
    labels = read_labels_csv(out / "class_labels_indices.csv")
    assert list(SPEECHCOMMANDS_LABELS) == AST_ORDER
    assert list(labels.names) == AST_ORDER
    assert labels.mids == tuple(f"/m/spcmd{i:02d}" for i in range(35))
    valid_list = set(
        (out / "raw" / "speech_commands_v0.02" / "validation_list.txt").read_text().split()
    )
    valid = read_datafile(out / "datafiles" / "valid.json")
    assert {f"{e.wav.parent.name}/{e.wav.name}" for e in valid} == valid_list
    for entry in read_datafile(out / "datafiles" / "train.json"):
        word = entry.wav.parent.name
        assert entry.labels == (f"/m/spcmd{AST_ORDER.index(word):02d}",)  # e.g. yes → /m/spcmd28
        assert entry.wav.name[:8] not in ("00000000", "00000001")  # those are in valid/test
    m = load_manifest(out)
    assert (m.dataset, m.target_length, m.num_classes) == ("speechcommands", 128, 35)
    assert m.split_names == ["test", "train", "valid"]
    noise = read_datafile(m.extra_path("background_noise"))
    assert sorted(e.wav.name for e in noise) == ["noise_0.wav", "noise_1.wav"]
    assert all(e.labels == () for e in noise)
    log = (out / "prepare.log").read_text()
    assert "deadbeef_nohash_0.wav" in log
    assert "no clips for 32 labels" in " ".join(report.notes)


def test_folder_source_and_rerun(tmp_path: Path) -> None:
    tree = make_speechcommands_tree(tmp_path / "sc", words=("yes", "no"), per_word=3)
    first = prepare_speechcommands(tree, tmp_path / "out")
    again = prepare_speechcommands(tree, tmp_path / "out")
    assert (
        first.counts == again.counts == {"train": 2, "valid": 2, "test": 2, "background_noise": 2}
    )
    assert again.reused == 8 and again.in_place == 0
    train = read_datafile(tmp_path / "out" / "datafiles" / "train.json")
    assert all(e.wav.is_relative_to(tree.resolve()) for e in train)  # 16-kHz clips used in place


def test_wrong_layouts_are_explained(tmp_path: Path) -> None:
    tree = make_speechcommands_tree(tmp_path / "sc", words=("yes",), per_word=2)
    (tree / "testing_list.txt").unlink()
    with pytest.raises(FastASTError, match="testing_list.txt"):
        prepare_speechcommands(tree, tmp_path / "out")
    tree = make_speechcommands_tree(tmp_path / "sc2", words=("yes", "banana"), per_word=2)
    with pytest.raises(FastASTError, match="banana"):
        prepare_speechcommands(tree, tmp_path / "out2")
