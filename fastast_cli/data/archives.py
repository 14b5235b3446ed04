"""Safe, idempotent extraction of zip and tar archives.

Every member path is checked before anything is written: absolute paths, drive letters, `..`
components and paths that would leave the destination (also through an existing symlink) are
skipped (`fastast_cli.data.safepath`), as are links, devices and FIFOs (a dataset needs none;
a zip member without file-type bits is a regular file). Skipped members are reported;
everything else is extracted. Files are streamed, never unpacked by the library's own
`extract`, so nothing outside the destination can be created.

Size limits: before a member is written, the expanded total (as the archive declares it; the
readers never yield more) is checked against `MAX_RATIO` times the archive's size (with a floor of
`MIN_EXPANDED` for small archives) and against the free disk space minus `FREE_RESERVE`; past
either, extraction stops with a clear message and its partial output is removed.

Extraction goes to `<dest>.partial` (marked as fastast's while in progress) and is renamed to
`<dest>` when complete, with a marker recording which archive (path, size, mtime) it came from:
a re-run with the same archive skips the work, an interrupted run starts over (a `.partial`
left by a killed run is removed first). A `<dest>` or `<dest>.partial` without fastast's marker
belongs to the user: it is never deleted, extraction is refused instead.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastast_cli.atomic import write_json
from fastast_cli.data.safepath import resolve_under
from fastast_cli.errors import FastASTError
from fastast_cli.progress import byte_progress

MARKER = ".fastast-extracted.json"
PARTIAL_MARKER = ".fastast-extracting.json"
MAX_RATIO = 100  # expanded bytes per archive byte: beyond it an archive looks like a bomb
MIN_EXPANDED = 64 << 20  # any archive may expand to this much (tiny archives compress well)
FREE_RESERVE = 256 << 20  # disk space left free after extraction
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


def _signature(archive: Path) -> dict[str, object]:
    """What identifies an archive for the re-run check."""
    info = archive.stat()
    return {"archive": str(archive.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _size(n: float) -> str:
    """Bytes for a message: `4.0 GiB`."""
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


@dataclass
class SizeBudget:
    """How many bytes an archive may still expand to: the compression-ratio and the free-disk
    limits, each explained in its own message when crossed."""

    archive: Path
    ratio_limit: int
    disk_limit: int
    free: int
    used: int = 0

    @classmethod
    def for_archive(cls, archive: Path, dest: Path) -> SizeBudget:
        """The limits for extracting `archive` into folder `dest` (which exists)."""
        free = shutil.disk_usage(dest).free
        ratio_limit = max(MAX_RATIO * archive.stat().st_size, MIN_EXPANDED)
        return cls(archive, ratio_limit, free - FREE_RESERVE, free)

    def take(self, size: int) -> None:
        """Count `size` more expanded bytes; FastASTError once past a limit (nothing written)."""
        self.used += size
        if self.used > self.ratio_limit:
            raise FastASTError(
                f"{self.archive}: expands to more than {_size(self.ratio_limit)} "
                f"({MAX_RATIO}x its {_size(self.archive.stat().st_size)}), which looks like a "
                "decompression bomb; refused (nothing extracted)"
            )
        if self.used > self.disk_limit:
            raise FastASTError(
                f"{self.archive}: needs at least {_size(self.used)} but only {_size(self.free)} "
                f"is free (keeping {_size(FREE_RESERVE)} spare); free some space or choose "
                "another --out (nothing extracted)"
            )


def _write_member(source: IO[bytes], target: Path) -> None:
    """Stream one member's bytes to `target` (parents created)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """`file`, `folder` or `unsafe` (links, devices, FIFOs, sockets) for a zip member.

    The file type sits in the high bits of the external attributes when a Unix tool wrote the
    zip; `zipfile.writestr` and many Windows tools store permission bits only (no type): such a
    member is a regular file, or a folder when its name ends in `/`.
    """
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFDIR or (kind == 0 and info.is_dir()):
        return "folder"
    return "file" if kind in (0, stat.S_IFREG) else "unsafe"


def _zip_members(archive: Path, dest: Path, report: ExtractReport) -> None:
    """Extract the safe regular files and folders of a zip archive into `dest`."""
    with zipfile.ZipFile(archive) as zf:
        members = []
        for info in zf.infolist():
            target, kind = resolve_under(dest, info.filename), _zip_kind(info)
            if target is None or kind == "unsafe":
                report.unsafe.append(info.filename)
            else:
                members.append((info, target, kind))
        SizeBudget.for_archive(archive, dest).take(
            sum(info.file_size for info, _, kind in members if kind == "file")
        )  # zipfile never yields more than a member's declared file_size
        with byte_progress(
            f"extract {archive.name}", sum(info.file_size for info, *_ in members)
        ) as bar:
            for info, target, kind in members:
                if kind == "folder":
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                with zf.open(info) as source:
                    _write_member(source, target)
                report.files += 1
                bar.advance(info.file_size)


def _tar_members(archive: Path, dest: Path, report: ExtractReport) -> None:
    """Extract the safe regular files and folders of a (compressed) tar archive into `dest`."""
    budget = SizeBudget.for_archive(archive, dest)
    with (
        open(archive, "rb") as raw,
        tarfile.open(fileobj=raw, mode="r:*") as tf,
        byte_progress(f"extract {archive.name}", archive.stat().st_size) as bar,
    ):
        position = 0
        for member in _iter_tar(tf):
            target = resolve_under(dest, member.name)
            if target is None or not (member.isfile() or member.isdir()):
                report.unsafe.append(member.name)
            elif member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                budget.take(member.size)  # extractfile never yields more than member.size
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


def _previous_extraction(dest: Path, signature: dict[str, object]) -> ExtractReport | None:
    """The report of an earlier extraction of the same archive into `dest`, if complete."""
    try:
        previous = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or damaged marker: extract again
    if not isinstance(previous, dict) or any(previous.get(k) != v for k, v in signature.items()):
        return None
    return ExtractReport(dest, previous.get("files", 0), previous.get("unsafe", []), True)


def _clear_own(folder: Path, marker: str) -> None:
    """Remove `folder` if fastast made it (it holds `marker`) or it is empty; refuse otherwise."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink():
        if (folder / marker).is_file():
            shutil.rmtree(folder)
            return
        if not any(folder.iterdir()):
            folder.rmdir()
            return
    raise FastASTError(
        f"{folder} already exists and was not written by fastast (no {marker} in it); "
        "nothing was deleted: move it away or choose another --out"
    )


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> ExtractReport:
    """Extract `archive` (.zip, .tar, .tar.gz/.tgz/.bz2/.xz) into folder `dest`, safely.

    Returns the report; `report.unsafe` lists skipped member names. A damaged archive, or one
    past the size limits, raises FastASTError and leaves no partial folder behind; so does a
    `dest` that fastast did not write.
    """
    archive, dest = Path(archive), Path(dest)
    signature = _signature(archive)
    if (previous := _previous_extraction(dest, signature)) is not None:
        return previous
    partial = dest.with_name(dest.name + ".partial")
    _clear_own(partial, PARTIAL_MARKER)  # left by a killed run
    _clear_own(dest, MARKER)  # an extraction of another archive
    partial.mkdir(parents=True)
    write_json(partial / PARTIAL_MARKER, signature)
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
    (partial / PARTIAL_MARKER).unlink()
    os.replace(partial, dest)
    return report
