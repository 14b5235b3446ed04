"""Safe file output: atomic writes, output paths checked before any work, Ctrl-C held off.

Atomic: write to a temporary file beside the target (`.NAME.XXXX.SUFFIX.tmp`), then
`os.replace` it. A reader (or a re-run after a crash) therefore sees either the old file or the
complete new one, never half a file; a temporary left by a killed process is found by
`stale_temporaries` and removed by the next run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastast_cli.errors import FastASTError


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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.",
        suffix=(target.suffix if suffix is None else suffix) + ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Temporaries that `atomic_path(target)` made and a killed process left behind."""
    target = Path(target)
    return sorted(target.parent.glob(f".{target.name}.*{target.suffix}.tmp"))


def remove_stale_temporaries(target: str | os.PathLike[str]) -> None:
    """Remove what `stale_temporaries(target)` finds (only files of that naming)."""
    for path in stale_temporaries(target):
        if path.is_file() and not path.is_symlink():
            path.unlink()


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


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold off Ctrl-C (SIGINT) until the block is done, then raise KeyboardInterrupt: for
    writes that must finish together (a log row and the checkpoint that matches it).

    Outside the main thread (where signal handlers cannot be set) the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
    if received:
        raise KeyboardInterrupt


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
