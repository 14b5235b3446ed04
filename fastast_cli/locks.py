"""Advisory locks that keep two fastast processes off one output: a training run's folder (two
`--resume` of one `--out`, or two fresh starts racing between the check and the first write) and
a sweep's CSV (two sweeps resuming one table).

The lock is `fcntl.flock` on a small file inside the folder (`.fastast.lock`) or beside the CSV
(`.NAME.lock`), taken without waiting: a second process stops at once with one line naming the
holder's process id. The kernel drops the lock when its holder dies (SIGKILL, a crash), so a
killed run never leaves a folder locked; the holder removes the file when it is done. On file
systems without flock the lock is skipped (it is advisory).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastast_cli.atomic import output_error, output_folder
from fastast_cli.errors import FastASTError

FOLDER_LOCK = ".fastast.lock"
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_path_of_file(path: Path) -> Path:
    """The lock file of the output file `path`: `.NAME.lock` beside it."""
    return path.parent / f".{path.name}.lock"


@contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "--out") -> Iterator[None]:
    """Hold the lock of `folder` (created when missing) for the block. A folder this call made
    and that is empty when the block ends (the run failed before its first file) is removed."""
    folder = Path(folder)
    with output_folder(folder), file_lock(folder / FOLDER_LOCK, f"{what} {folder}"):
        yield


@contextmanager
def output_lock(path: str | os.PathLike[str], what: str = "--out") -> Iterator[None]:
    """Hold the lock of the output file `path` (its `.NAME.lock` beside it) for the block."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(path, error) from None
    with file_lock(lock_path_of_file(path), f"{what} {path}"):
        yield


@contextmanager
def file_lock(lock: Path, label: str) -> Iterator[None]:
    """flock `lock` (made if missing) without waiting; `label` names the output in the refusal."""
    fd = _acquire(lock, label)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                lock.unlink(missing_ok=True)  # still held: nobody can take the removed file
            os.close(fd)


def _acquire(lock: Path, label: str) -> int | None:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise FastASTError(f"{lock} is a symbolic link: remove it") from None
            raise output_error(lock, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(fd)
            os.close(fd)
            if error.errno in UNSUPPORTED:
                return None
            raise FastASTError(
                f"{label} is in use by another fastast process{holder}: wait for it to end or "
                "pick another --out") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed while we waited for it
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass  # a full disk: the lock holds without the holder's pid
            return fd
        os.close(fd)


def _holder(fd: int) -> str:
    """` (pid N)` from the lock file's content, when it names one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
