"""`prepare audioset`: clips found by YouTube id, missing ones counted, multi-label targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from data_fixtures import (  # noqa: F401
    AUDIOSET_LABELS,
    no_progress,
    write_audioset_labels,
    write_segments,
    write_tone,
)
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.data.datafile import read_datafile, read_labels_csv
from fastast_cli.data.manifest import load_manifest
from fastast_cli.data.prepare import prepare_audioset
from fastast_cli.data.prepare.audioset import datafile_keys
from fastast_cli.errors import FastASTError

TRAIN = [
    ("--PJHxphWEs", "/m/09x0r,/m/05zppz"),
    ("--ZhevVpy1s", "/m/04rlf"),
    ("Ya1b2c3d4e5", "/m/0jbk"),
    ("-0DLPzsiXXE", "/m/04rlf,/m/0jbk"),
    ("MISSING0001", "/m/09x0r"),
    ("MISSING0002", "/m/04rlf"),
]
EVAL = [
    ("eval0000001", "/m/09x0r"),
    ("eval0000002", "/m/04rlf,/m/unknown"),
    ("MISSING0003", "/m/0jbk"),
]


@pytest.fixture()
def audioset(tmp_path: Path) -> dict[str, Path]:
    audio = tmp_path / "audio"
    write_tone(audio / "bal" / "Y--PJHxphWEs.flac", sample_rate=32000, seconds=0.5, fmt="FLAC")
    write_tone(audio / "bal" / "--ZhevVpy1s_30000.wav", seconds=0.5)
    write_tone(audio / "bal" / "YYa1b2c3d4e5.wav", sample_rate=44100, channels=2, seconds=0.5)
    write_tone(audio / "bal" / "-0DLPzsiXXE.wav", seconds=0.5)
    write_tone(audio / "eval" / "eval0000001.wav", seconds=0.5)
    write_tone(audio / "eval" / "Yeval0000002.wav", seconds=0.5)
    return {
        "audio": audio,
        "labels": write_audioset_labels(tmp_path / "class_labels_indices.csv"),
        "train": write_segments(tmp_path / "balanced_train_segments.csv", TRAIN),
        "eval": write_segments(tmp_path / "eval_segments.csv", EVAL),
    }


def test_present_clips_are_prepared_and_missing_ones_counted(
    audioset: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = prepare_audioset(
        [str(audioset["train"]), str(audioset["eval"])],
        audioset["labels"],
        audioset["audio"],
        out,
        target_length=64,
    )
    assert report.counts == {"train": 4, "eval": 2}
    assert sorted(m.split("\t")[0] for m in report.missing) == [
        "MISSING0001",
        "MISSING0002",
        "MISSING0003",
    ]
    assert any("3 of 9 listed clips are missing" in n for n in report.notes)
    assert any("/m/unknown" in n for n in report.notes)
    assert report.converted == 2 and report.in_place == 4  # the FLAC and the 44.1-kHz stereo clip
    assert read_labels_csv(out / "class_labels_indices.csv").names[1] == "Male speech, man speaking"
    m = load_manifest(out)
    assert (m.dataset, m.target_length, m.num_classes, m.norm_measured_on) == (
        "audioset",
        64,
        4,
        "train",
    )
    train = m.dataset_for("train")
    by_name = {e.wav.stem: i for i, e in enumerate(train.entries)}
    assert train.targets[by_name["Y--PJHxphWEs"]].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert train.targets[by_name["-0DLPzsiXXE"]].tolist() == [0.0, 0.0, 1.0, 1.0]
    converted = train.entries[by_name["YYa1b2c3d4e5"]].wav
    assert (sf.info(str(converted)).samplerate, sf.info(str(converted)).channels) == (16000, 1)
    evaluation = read_datafile(m.datafile("eval"))
    assert [e.labels for e in evaluation] == [("/m/09x0r",), ("/m/04rlf",)]
    assert train[0][0].shape == (64, 128) and torch.isfinite(train[0][0]).all()
    assert "MISSING0002" in (out / "prepare.log").read_text()


def test_named_splits_and_nothing_found(audioset: dict[str, Path], tmp_path: Path) -> None:
    report = prepare_audioset(
        [f"bal={audioset['train']}"],
        audioset["labels"],
        audioset["audio"],
        tmp_path / "out",
        target_length=64,
    )
    assert report.counts == {"bal": 4}
    assert load_manifest(tmp_path / "out").norm_measured_on.startswith("all clips")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FastASTError, match="none of the 6 listed clips"):
        prepare_audioset(
            [str(audioset["train"])], audioset["labels"], tmp_path / "empty", tmp_path / "out2"
        )
    with pytest.raises(FastASTError, match="index,mid,display_name"):
        prepare_audioset(
            [str(audioset["train"])], audioset["train"], audioset["audio"], tmp_path / "o3"
        )


# --- AST/PSLA datafiles -----------------------------------------------------------------------


def write_json_datafile(path: Path, rows: list[tuple[str, str]]) -> Path:
    """An AST/PSLA datafile: {"data": [{"wav": ..., "labels": "mid1,mid2"}]}."""
    path.write_text(json.dumps({"data": [{"wav": wav, "labels": labels} for wav, labels in rows]}))
    return path


def test_datafile_keys_use_the_file_name_only():
    assert datafile_keys("/data/sls/audioset/data/audio/eval/_/_/--4gqARaEJE_0.000.flac") == (
        "--4gqARaEJE_0.000", "--4gqARaEJE")
    assert datafile_keys("Y--PJHxphWEs.wav") == ("Y--PJHxphWEs", "--PJHxphWEs")
    assert datafile_keys("Ya1b2c3d4e5_30.000.wav") == ("Ya1b2c3d4e5_30.000", "Ya1b2c3d4e5")
    assert datafile_keys("C:\\clips\\--ZhevVpy1s.wav") == ("--ZhevVpy1s",)
    assert datafile_keys("../../../etc/passwd") == ("passwd",)
    assert datafile_keys("..") == () and datafile_keys("") == ()


def test_psla_datafile_labels_map_to_local_clips(audioset: dict[str, Path], tmp_path: Path):
    """PSLA's enhanced balanced labels for training, the segment CSV for eval. Wav paths from
    another machine find the local clips by name; absent ones are counted; paths outside
    --audio-dir are never read, even when they exist."""
    outside = tmp_path / "outside"
    write_tone(outside / "-0DLPzsiXXE.wav", seconds=0.5, freq=3000.0)  # a local clip's name
    write_tone(outside / "NOTLOCAL001.wav", seconds=0.5)  # exists, but not in --audio-dir
    enhanced = write_json_datafile(tmp_path / "balanced_train_data_type1_2_mean.json", [
        ("/data/sls/audioset/data/audio/bal/_/_/--PJHxphWEs_30.000.flac", "/m/09x0r,/m/04rlf"),
        ("C:\\audioset\\bal\\--ZhevVpy1s_30000.wav", "/m/04rlf,/m/0jbk"),
        ("YYa1b2c3d4e5.wav", "/m/0jbk,/m/unknown"),
        (str(outside / "-0DLPzsiXXE.wav"), "/m/09x0r"),
        (str(outside / "NOTLOCAL001.wav"), "/m/09x0r"),
        ("../../../../etc/passwd", "/m/09x0r"),
        ("/data/sls/audioset/MISSING0001_0.000.flac", "/m/04rlf"),
        ("/data/evil\nname.wav", "/m/04rlf"),  # a log line of its own
    ])
    out = tmp_path / "out"
    report = prepare_audioset([str(audioset["eval"])], audioset["labels"], audioset["audio"],
                              out, datafiles=[str(enhanced)], target_length=64)
    assert report.counts == {"eval": 2, "train": 4}
    assert sorted(m.split("\t")[0] for m in report.missing) == [
        "'/data/evil\\nname.wav'", "MISSING0001", "MISSING0003", "NOTLOCAL001", "passwd"]
    assert any("5 of 11 listed clips are missing" in n for n in report.notes)
    assert "evil\n" not in (out / "prepare.log").read_text()
    assert "train labels from balanced_train_data_type1_2_mean.json" in report.notes
    train = load_manifest(out).dataset_for("train")
    targets = {e.wav.stem: train.targets[i].tolist() for i, e in enumerate(train.entries)}
    assert targets == {  # the datafile's labels (Speech, Male speech, Music, Animal)
        "Y--PJHxphWEs": [1.0, 0.0, 1.0, 0.0],  # segment CSV: Speech, Male speech
        "--ZhevVpy1s_30000": [0.0, 0.0, 1.0, 1.0],
        "YYa1b2c3d4e5": [0.0, 0.0, 0.0, 1.0],
        "-0DLPzsiXXE": [1.0, 0.0, 0.0, 0.0],
    }
    local = sf.read(str(audioset["audio"] / "bal" / "-0DLPzsiXXE.wav"))[0]
    prepared = next(e.wav for e in train.entries if e.wav.stem == "-0DLPzsiXXE")
    assert (sf.read(str(prepared))[0] == local).all()  # the local clip, not the outside file
    assert all(e.wav.is_relative_to(out) or e.wav.is_relative_to(audioset["audio"])
               for e in train.entries)


def test_prepare_audioset_cli_takes_datafiles(audioset: dict[str, Path], tmp_path: Path):
    enhanced = write_json_datafile(tmp_path / "train.json", [("--PJHxphWEs_0.000.flac",
                                                              "/m/09x0r")])
    common = ["prepare", "audioset", "--labels", str(audioset["labels"]), "--audio-dir",
              str(audioset["audio"]), "--target-length", "64", "--quiet"]
    result = CliRunner().invoke(app, [*common, "--datafile", f"train={enhanced}", "--segments",
                                      str(audioset["eval"]), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert load_manifest(tmp_path / "o").counts == {"train": 1, "eval": 2}
    result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "--datafile" in result.output
    (tmp_path / "bad.json").write_text('{"data": [{"wav": "x.wav"}]}')
    result = CliRunner().invoke(app, [*common, "--datafile", str(tmp_path / "bad.json"),
                                      "--out", str(tmp_path / "o3")])
    assert result.exit_code == 2 and "entry 0 lacks 'wav' or 'labels'" in result.output
