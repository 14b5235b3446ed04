"""Bad inputs: corrupt, empty, 8-bit and stereo 44.1-kHz files; path-traversal archives."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from data_fixtures import make_class_folders, make_esc50_tree, no_progress, write_tone  # noqa: F401
from typer.testing import CliRunner

from fastast_cli.data.archives import extract_archive
from fastast_cli.data.audio import AudioReadError, load_mono, read_audio
from fastast_cli.data.datafile import read_datafile
from fastast_cli.data.prepare import prepare_esc50, prepare_folder
from fastast_cli.errors import FastASTError


@pytest.fixture()
def messy_folder(tmp_path: Path) -> Path:
    """Two classes of good clips plus one file of each awkward kind in class 'a'."""
    src = make_class_folders(tmp_path / "src", {"a": 4, "b": 4})
    write_tone(src / "a" / "eight_bit.wav", subtype="PCM_U8", seconds=0.5, freq=700)
    write_tone(src / "a" / "stereo_44k.wav", sample_rate=44100, channels=2, seconds=0.5, freq=900)
    (src / "a" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    (src / "a" / "empty.wav").write_bytes(b"")
    sf.write(str(src / "b" / "no_samples.wav"), np.zeros(0, dtype=np.float32), 16000)
    return src


def test_bad_files_are_reported_and_skipped_the_rest_prepared(
    messy_folder: Path, tmp_path: Path
) -> None:
    report = prepare_folder(messy_folder, tmp_path / "out", ratios=(1.0, 0.0, 0.0))
    skipped = {Path(path).name: reason for path, reason in report.skipped}
    assert set(skipped) == {"corrupt.wav", "empty.wav", "no_samples.wav"}
    assert "empty" in skipped["no_samples.wav"]
    assert report.counts == {"train": 10}  # 8 good + 8-bit + stereo: nothing else lost
    entries = {
        e.wav.stem: e.wav for e in read_datafile(tmp_path / "out" / "datafiles" / "train.json")
    }
    for name in ("eight_bit", "stereo_44k"):  # converted to 16-bit mono 16 kHz
        info = sf.info(str(entries[name]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert entries[name].is_relative_to((tmp_path / "out" / "audio_16k").resolve())
    eight_bit = load_mono(entries["eight_bit"])
    original = load_mono(messy_folder / "a" / "eight_bit.wav")
    assert np.abs((eight_bit - original).numpy()).max() < 1e-3  # same sound, only re-encoded
    stereo, rate = read_audio(messy_folder / "a" / "stereo_44k.wav")
    assert rate == 44100 and stereo.shape[0] == 2
    assert load_mono(entries["stereo_44k"]).shape == (8000,)
    assert entries["clip_00"].is_relative_to(messy_folder.resolve())  # plain 16-kHz clips in place
    log = (tmp_path / "out" / "prepare.log").read_text()
    assert "[skipped: unreadable, corrupt or empty audio] 3" in log
    assert all(name in log for name in ("corrupt.wav", "empty.wav", "no_samples.wav"))


def test_cli_reports_bad_files_without_a_traceback(messy_folder: Path, tmp_path: Path) -> None:
    from fastast_cli.cli import app

    result = CliRunner().invoke(
        app,
        [
            "prepare",
            "folder",
            "--src",
            str(messy_folder),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 unreadable, corrupt or empty audio files skipped" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output + result.stderr


def test_read_audio_errors_carry_path_and_reason(messy_folder: Path) -> None:
    with pytest.raises(AudioReadError, match="corrupt.wav: cannot decode"):
        read_audio(messy_folder / "a" / "corrupt.wav")
    with pytest.raises(AudioReadError, match="no audio samples"):
        read_audio(messy_folder / "b" / "no_samples.wav")


def _traversal_zip(tree: Path, archive: Path) -> Path:
    """A real ESC-50 zip plus members that try to escape or link outside."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*")):
            zf.write(path, path.relative_to(tree.parent).as_posix())
        zf.writestr("../escaped.txt", "owned")
        zf.writestr("/abs_escaped.txt", "owned")
        zf.writestr("ESC-50-master/../../escaped2.txt", "owned")
        link = zipfile.ZipInfo("ESC-50-master/audio/link.wav")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return archive


def test_path_traversal_zip_extracts_only_safe_members(tmp_path: Path) -> None:
    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=5, per_fold=1)
    archive = _traversal_zip(tree, tmp_path / "src" / "ESC-50-master.zip")
    out = tmp_path / "deep" / "out"
    report = prepare_esc50(archive, out)
    assert sorted(report.unsafe) == [
        "../escaped.txt",
        "/abs_escaped.txt",
        "ESC-50-master/../../escaped2.txt",
        "ESC-50-master/audio/link.wav",
    ]
    assert not any(p.name.startswith(("escaped", "abs_escaped")) for p in tmp_path.rglob("*"))
    assert not list(out.rglob("link.wav")) and not any(p.is_symlink() for p in out.rglob("*"))
    assert (
        report.counts["fold1_eval"] == 2 and report.counts["fold1_train"] == 8
    )  # nothing else lost
    assert "../escaped.txt" in (out / "prepare.log").read_text()


def test_path_traversal_tar_and_links_are_skipped(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in [
            ("good/a.txt", b"ok"),
            ("../evil.txt", b"x"),
            ("/etc/evil", b"x"),
            ("good/../../evil2.txt", b"x"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for kind, name, target in [
            (tarfile.SYMTYPE, "good/sym", "/etc/passwd"),
            (tarfile.LNKTYPE, "good/hard", "../../outside"),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
        fifo = tarfile.TarInfo("good/fifo")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
    dest = tmp_path / "x" / "dest"
    report = extract_archive(archive, dest)
    assert report.files == 1 and (dest / "good" / "a.txt").read_bytes() == b"ok"
    assert sorted(report.unsafe) == [
        "../evil.txt",
        "/etc/evil",
        "good/../../evil2.txt",
        "good/fifo",
        "good/hard",
        "good/sym",
    ]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        ".fastast-extracted.json",
        "a.txt",
        "bad.tar.gz",
    ]
    assert extract_archive(archive, dest).reused  # a re-run skips the work


def test_damaged_archive_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=2, per_fold=1)
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for path in sorted(tree.rglob("*")):
            zf.write(path, path.relative_to(tree.parent).as_posix())
    broken = tmp_path / "ESC-50-master.zip"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FastASTError, match="damaged or unreadable archive"):
        prepare_esc50(broken, tmp_path / "out")
    assert not (tmp_path / "out" / "raw").exists() or not any((tmp_path / "out" / "raw").iterdir())
