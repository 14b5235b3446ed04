"""Archives: size limits (bombs), folders fastast did not write, zips without file-type bits,
and --checksum on a local archive."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from data_fixtures import (  # noqa: F401
    make_esc50_tree,
    make_speechcommands_tree,
    no_progress,
    tar_tree,
    zip_tree,
)
from typer.testing import CliRunner

from fastast_cli.data import archives
from fastast_cli.data.archives import MARKER, extract_archive
from fastast_cli.data.prepare import prepare_esc50, prepare_speechcommands
from fastast_cli.errors import FastASTError


@pytest.fixture()
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits scaled down so a 1-MiB member is a bomb: ratio 10, floor 64 KiB."""
    monkeypatch.setattr(archives, "MAX_RATIO", 10, raising=False)
    monkeypatch.setattr(archives, "MIN_EXPANDED", 64 << 10, raising=False)


def _bomb_zip(path: Path) -> Path:
    """A zip of a few KiB holding one 1-MiB member of zeros (ratio ≈ 1000)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/zeros.bin", bytes(1 << 20))
    return path


def _bomb_tar(path: Path) -> Path:
    """A tar.gz of a few KiB: a small good member, then one 1-MiB member of zeros."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in [("bomb/ok.txt", b"ok"), ("bomb/zeros.bin", bytes(1 << 20))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("make", [_bomb_zip, _bomb_tar], ids=["zip", "tar.gz"])
def test_a_decompression_bomb_is_refused_before_writing(
    make, small_limits: None, tmp_path: Path
) -> None:
    archive = make(tmp_path / ("b.zip" if make is _bomb_zip else "b.tar.gz"))
    assert archive.stat().st_size < 8 << 10
    with pytest.raises(FastASTError, match="looks like a decompression bomb"):
        extract_archive(archive, tmp_path / "out" / "b")
    assert list((tmp_path / "out").iterdir()) == []  # no partial folder left


def test_an_archive_larger_than_the_free_space_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(archives, "FREE_RESERVE", 1 << 62, raising=False)  # a full disk
    archive = _bomb_tar(tmp_path / "b.tar.gz")
    with pytest.raises(FastASTError, match="is free"):
        extract_archive(archive, tmp_path / "out" / "b")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_partial_folder_of_a_killed_run_is_cleaned(tmp_path: Path) -> None:
    archive = _bomb_tar(tmp_path / "b.tar.gz")
    partial = tmp_path / "out" / "b.partial"
    (partial / "bomb").mkdir(parents=True)
    (partial / archives.PARTIAL_MARKER).write_text("{}")
    (partial / "bomb" / "half.bin").write_bytes(bytes(1000))
    report = extract_archive(archive, tmp_path / "out" / "b")
    assert report.files == 2 and not partial.exists()
    assert (tmp_path / "out" / "b" / "bomb" / "zeros.bin").stat().st_size == 1 << 20


def test_folders_fastast_did_not_write_are_never_deleted(tmp_path: Path) -> None:
    archive = _bomb_tar(tmp_path / "b.tar.gz")
    dest = tmp_path / "out" / "b"
    for folder in (dest, dest.with_name("b.partial")):
        folder.mkdir(parents=True)
        (folder / "mine.txt").write_text("user data")
        with pytest.raises(FastASTError, match="was not written by fastast"):
            extract_archive(archive, dest)
        assert (folder / "mine.txt").read_text() == "user data"
        (folder / "mine.txt").unlink()
    extract_archive(archive, dest)  # empty folders are fine
    assert (dest / MARKER).exists()


def test_prepare_refuses_a_user_folder_at_raw_stem(tmp_path: Path) -> None:
    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=2, per_fold=1)
    archive = zip_tree(tree, tmp_path / "ESC-50-master.zip")
    mine = tmp_path / "out" / "raw" / "ESC-50-master" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("user data")
    with pytest.raises(FastASTError, match="nothing was deleted"):
        prepare_esc50(archive, tmp_path / "out")
    assert mine.read_text() == "user data"


def test_a_changed_archive_replaces_its_own_extraction(tmp_path: Path) -> None:
    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=2, per_fold=1)
    archive = zip_tree(tree, tmp_path / "ESC-50-master.zip")
    prepare_esc50(archive, tmp_path / "out")
    raw = tmp_path / "out" / "raw" / "ESC-50-master"
    (raw / "stale.txt").write_text("from the old extraction")
    (tree / "extra.txt").write_text("new in this version")
    zip_tree(tree, archive)
    report = prepare_esc50(archive, tmp_path / "out")
    assert (raw / "ESC-50-master" / "extra.txt").exists() and not (raw / "stale.txt").exists()
    assert report.counts["fold1_eval"] == 2


def _writestr_zip(tree: Path, archive: Path) -> Path:
    """ESC-50 layout zipped with `writestr`: permission bits, no file-type bits (0o600 << 16)."""
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ESC-50-master/", b"")
        for path in sorted(tree.rglob("*")):
            name = path.relative_to(tree.parent).as_posix()
            zf.writestr(name + "/" if path.is_dir() else name,
                        b"" if path.is_dir() else path.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        assert {info.external_attr >> 16 for info in zf.infolist()} <= {0o600, 0o40775}
    return archive


def test_zip_members_without_file_type_bits_are_regular_files(tmp_path: Path) -> None:
    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=5, per_fold=1)
    archive = _writestr_zip(tree, tmp_path / "ESC-50-master.zip")
    report = prepare_esc50(archive, tmp_path / "out")
    assert report.unsafe == []
    assert report.counts["fold1_eval"] == 2 and report.counts["fold1_train"] == 8


def _md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def test_checksum_is_verified_for_a_local_archive(tmp_path: Path) -> None:
    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=2, per_fold=1)
    archive = zip_tree(tree, tmp_path / "ESC-50-master.zip")
    out = tmp_path / "out"
    for malformed in ("abc", "md5:xyz", "sha256:" + "0" * 32, "crc32:1234"):
        with pytest.raises(FastASTError, match="expected 'sha256:<64 hex digits>'"):
            prepare_esc50(archive, out, checksum=malformed)
    with pytest.raises(FastASTError, match="checksum mismatch"):
        prepare_esc50(archive, out, checksum="md5:" + "0" * 32)
    assert not (out / "raw").exists()
    assert prepare_esc50(archive, out, checksum=_md5(archive).upper()).counts["fold1_eval"] == 2
    assert prepare_esc50(archive, out, checksum="none").reused == 4
    assert prepare_esc50(archive, out).reused == 4  # local archive, no --checksum: not checked


def test_cli_checksum_on_a_local_archive(tmp_path: Path) -> None:
    from fastast_cli.cli import app

    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=2, per_fold=1)
    archive = zip_tree(tree, tmp_path / "ESC-50-master.zip")
    args = ["prepare", "esc50", "--src", str(archive), "--out", str(tmp_path / "o"), "--quiet"]
    result = CliRunner().invoke(app, [*args, "--checksum", "md5:nothex"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "expected 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'" in result.stderr
    result = CliRunner().invoke(app, [*args, "--checksum", "sha256:" + "a" * 64])
    assert result.exit_code == 2 and "checksum mismatch" in result.stderr
    assert CliRunner().invoke(app, [*args, "--checksum", _md5(archive)]).exit_code == 0


def test_checksum_is_verified_for_a_local_speechcommands_archive(tmp_path: Path) -> None:
    tree = make_speechcommands_tree(tmp_path / "sc", per_word=2)
    archive = tar_tree(tree, tmp_path / "speech_commands_v0.02.tar.gz")
    out = tmp_path / "out"
    with pytest.raises(FastASTError, match="expected 'sha256:<64 hex digits>'"):
        prepare_speechcommands(archive, out, checksum="md5:nothex")
    with pytest.raises(FastASTError, match="checksum mismatch"):
        prepare_speechcommands(archive, out, checksum="md5:" + "0" * 32)
    assert not (out / "raw").exists()
