"""Safe, idempotent extraction of zip and tar archives.

Every member path is checked before anything is written: absolute paths, drive letters, `..`
components and paths that would leave the destination (also through an existing symlink) are
skipped, as are links, devices and FIFOs (a dataset needs none). Skipped members are reported;
everything else is extracted. Files are streamed, never unpacked by the library's own
`extract`, so nothing outside the destination can be created.

Extraction goes to `<dest>.partial` and is renamed to `<dest>` when complete, with a marker
recording which archive (path, size, mtime) it came from: a re-run with the same archive skips
the work, an interrupted run starts over.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from fastast_cli.atomic import write_json
from fastast_cli.errors import FastASTError
from fastast_cli.progress import byte_progress

MARKER = ".fastast-extracted.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
CHUNK = 1 << 20


@dataclass
class ExtractReport:
    """Outcome of one extraction: where the content is and what was left out."""

    root: Path
    files: int = 0
    unsafe: list[str] = field(default_factory=list)
    reused: bool = False


def is_archive(path: Path) -> bool:
    """True for the archive formats `extract_archive` handles (by file name)."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: Path) -> str:
    """File name without its archive suffix (`x.tar.gz` → `x`)."""
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def safe_target(dest: Path, name: str) -> Path | None:
    """Where member `name` goes under `dest` (resolved), or None if it would escape `dest`."""
    name = name.replace("\\", "/")
    if not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    target = dest.joinpath(*parts).resolve()
    return target if target.is_relative_to(dest.resolve()) and target != dest.resolve() else None


def _signature(archive: Path) -> dict[str, object]:
    """What identifies an archive for the re-run check."""
    info = archive.stat()
    return {"archive": str(archive.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _write_member(source: IO[bytes], target: Path) -> None:
    """Stream one member's bytes to `target` (parents created)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def _zip_members(archive: Path, dest: Path, report: ExtractReport) -> None:
    """Extract the safe regular files and folders of a zip archive into `dest`."""
    with (
        zipfile.ZipFile(archive) as zf,
        byte_progress(f"extract {archive.name}", sum(i.file_size for i in zf.infolist())) as bar,
    ):
        for info in zf.infolist():
            target = safe_target(dest, info.filename)
            mode = info.external_attr >> 16
            if (
                target is None
                or stat.S_ISLNK(mode)
                or (mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)))
            ):
                report.unsafe.append(info.filename)
                continue
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as source:
                _write_member(source, target)
            report.files += 1
            bar.advance(info.file_size)


def _tar_members(archive: Path, dest: Path, report: ExtractReport) -> None:
    """Extract the safe regular files and folders of a (compressed) tar archive into `dest`."""
    with (
        open(archive, "rb") as raw,
        tarfile.open(fileobj=raw, mode="r:*") as tf,
        byte_progress(f"extract {archive.name}", archive.stat().st_size) as bar,
    ):
        position = 0
        for member in _iter_tar(tf):
            target = safe_target(dest, member.name)
            if target is None or not (member.isfile() or member.isdir()):
                report.unsafe.append(member.name)
            elif member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                source = tf.extractfile(member)
                if source is not None:
                    _write_member(source, target)
                    report.files += 1
            bar.advance(raw.tell() - position)
            position = raw.tell()


def _iter_tar(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members in archive order, read as a stream."""
    while (member := tf.next()) is not None:
        yield member


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> ExtractReport:
    """Extract `archive` (.zip, .tar, .tar.gz/.tgz/.bz2/.xz) into folder `dest`, safely.

    Returns the report; `report.unsafe` lists skipped member names. A damaged archive raises
    FastASTError and leaves no partial folder behind.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / MARKER
    signature = _signature(archive)
    if marker.exists():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}  # a damaged marker: extract again
        if all(previous.get(k) == v for k, v in signature.items()):
            return ExtractReport(dest, previous.get("files", 0), previous.get("unsafe", []), True)
    partial = dest.with_name(dest.name + ".partial")
    for stale in (partial, dest):
        if stale.exists():
            shutil.rmtree(stale)
    partial.mkdir(parents=True)
    report = ExtractReport(dest)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            _zip_members(archive, partial, report)
        elif name.endswith(ARCHIVE_SUFFIXES):
            _tar_members(archive, partial, report)
        else:
            raise FastASTError(f"{archive}: expected a .zip or .tar(.gz) archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError,
            RuntimeError, NotImplementedError) as error:  # also encrypted or Deflate64 zips
        shutil.rmtree(partial, ignore_errors=True)
        raise FastASTError(f"{archive}: damaged or unreadable archive ({error})") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    write_json(partial / MARKER, {**signature, "files": report.files, "unsafe": report.unsafe})
    os.replace(partial, dest)
    return report
