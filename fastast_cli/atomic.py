"""Safe file output: atomic writes, output paths checked before any work, stop requests held
off (`deferred_interrupts`, from fastast_cli.signals).

Atomic: write to a temporary file beside the target (`.NAME.XXXX.SUFFIX.tmp`), then
`os.replace` it. A reader (or a re-run after a crash) therefore sees either the old file or the
complete new one, never half a file; a temporary left by a killed process is found by
`stale_temporaries` and removed by the next run. The file gets the mode `open()` would give it
(0666 less the umask), whatever the writer inside did. A write that fails for want of room or
permission (a full disk, a read-only file system) is one `FastASTError` naming the file, with
the earlier file kept; writers that report a full disk in their own words (torch's zip writer)
are recognised by the free space left.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastast_cli.errors import FastASTError
from fastast_cli.signals import deferred_interrupts

__all__ = ["atomic_folder", "atomic_path", "check_output", "deferred_interrupts", "json_safe",
           "output_error", "remove_stale_temporaries", "stale_temporaries", "write_json",
           "write_text"]

# Why a write failed, in words, for the errors that are the machine's, not the program's.
WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is too large for the file system",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
}


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


@contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` atomically.

    `suffix` (default: the target's own suffix) lets writers that look at the extension, such
    as soundfile or numpy, pick the right format for the temporary file.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.",
            suffix=(target.suffix if suffix is None else suffix) + ".tmp",
            dir=target.parent,
        )
        os.close(fd)
    except OSError as error:
        raise output_error(target, error) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600, and some writers (safetensors) make their file anew: give the
        # file what open() would
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    except FastASTError:
        raise
    except OSError as error:
        if error.errno not in WRITE_FAILURES:
            raise
        raise output_error(target, error) from None
    except Exception as error:
        code = _reported_errno(error) or (errno.ENOSPC if _full(target.parent) else None)
        if code is None:
            raise
        raise output_error(target, OSError(code, str(error))) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `target` (absent or an empty folder); on success it
    becomes `target` whole, on failure (a full disk, Ctrl-C) it is removed: no half-written
    folder is ever left."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp-folder",
                                         dir=target.parent))
        os.chmod(building, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give what mkdir would
    except OSError as error:
        raise output_error(target, error) from None
    try:
        yield building
        if target.is_dir():
            target.rmdir()  # empty (the caller checked): replaced by the finished folder
        os.rename(building, target)
    except FastASTError as error:  # a file inside: named as it would have been in `target`
        raise FastASTError(str(error).replace(str(building), str(target))) from None
    except OSError as error:
        if error.errno not in WRITE_FAILURES:
            raise
        raise output_error(target, error) from None
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)


@contextmanager
def output_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Create `folder` (and its parents) for the block's outputs; a folder made here that is
    still empty when the block ends (a full disk at the first file) is removed again: a failed
    command leaves no empty folder behind."""
    folder = Path(folder)
    made = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(folder, error) from None
    try:
        yield folder
    finally:
        for path in made:  # innermost first; stops at the first that is not empty
            try:
                path.rmdir()
            except OSError:
                break


def output_error(target: str | os.PathLike[str], error: OSError) -> FastASTError:
    """The one-line error of a failed write of `target` (a full disk, a read-only file system,
    no permission), saying that an earlier file of that name is kept."""
    target = Path(target)
    reason = WRITE_FAILURES.get(error.errno or 0, error.strerror or str(error))
    kept = f"; the earlier {target.name} is kept" if target.is_file() else ""
    return FastASTError(f"cannot write {target}: {reason}{kept}")


def _reported_errno(error: Exception) -> int | None:
    """The write failure a writer's own exception names in its message (safetensors says
    `(os error 28)`, others `[Errno 28]`), when it is one of WRITE_FAILURES."""
    match = re.search(r"os error (\d+)|\[Errno (\d+)\]", str(error))
    code = int(match[1] or match[2]) if match else None
    return code if code in WRITE_FAILURES else None


def _full(folder: Path) -> bool:
    """Whether the file system of `folder` has (next to) no room left."""
    try:
        info = os.statvfs(folder)
    except OSError:
        return False
    return info.f_bavail <= 4


def stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Temporaries that `atomic_path(target)` made and a killed process left behind."""
    target = Path(target)
    return sorted(target.parent.glob(f".{target.name}.*{target.suffix}.tmp"))


def remove_stale_temporaries(target: str | os.PathLike[str]) -> None:
    """Remove what `stale_temporaries(target)` finds (only files of that naming)."""
    for path in stale_temporaries(target):
        if path.is_file() and not path.is_symlink():
            path.unlink()


# `.NAME.XXXXXXXX.SUFFIX.tmp`: what atomic_path names its temporaries (mkstemp's 8 characters).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?\.tmp$")


def is_temporary(path: Path) -> bool:
    """Whether `path` is named as atomic_path names a temporary of a file in its folder."""
    match = _TEMPORARY.match(path.name)
    return bool(match) and match["name"].endswith(match["suffix"] or "")


def remove_temporaries_in(folder: str | os.PathLike[str], recursive: bool = False) -> int:
    """Remove the temporaries a killed writer left in `folder` (and below, `recursive`): plain
    files of atomic_path's naming only. Returns how many."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return 0
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = 0
    for path in found:
        if is_temporary(path) and path.is_file() and not path.is_symlink():
            path.unlink()
            removed += 1
    return removed


def check_output(path: str | os.PathLike[str], *, folder: bool, option: str = "--out") -> None:
    """Refuse, before any work, an output `path` (a `folder` or a file) that cannot be written:
    a file where a folder is expected (or the reverse), a path under a file, a folder that
    does not let us create files (tested by creating one: permission bits say nothing for root,
    nor for /proc)."""
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise FastASTError(f"{option} {path} is a file, not a folder")
    if not folder and path.is_dir():
        raise FastASTError(f"{option} {path} is a folder: give a file name")
    if not folder and path.is_file() and not path.stat().st_mode & 0o222:
        mode = stat.S_IMODE(path.stat().st_mode)
        raise FastASTError(f"{option} {path} is read-only (mode {mode:o}): make it writable or "
                           "pick another name")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FastASTError(f"{option} {path} cannot be written: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fastast-probe-", dir=existing)
    except OSError as error:
        raise FastASTError(
            f"{option} {path} cannot be written: {existing} does not accept files "
            f"({error.strerror or error})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(value: Any) -> Any:
    """`value` with NaN and ±inf (not valid JSON) replaced by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def write_json(target: str | os.PathLike[str], data: Any, indent: int | None = 1) -> None:
    """Write `data` as JSON to `target` atomically (non-finite numbers become null)."""
    write_text(target, json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n")
