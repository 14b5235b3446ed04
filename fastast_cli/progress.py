"""Progress bars for long engine steps, on stderr, that callers (and tests) can switch off.

Set `FASTAST_NO_PROGRESS=1` in the environment, or call `set_progress(False)`, to silence them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

T = TypeVar("T")

_state = {"enabled": not os.environ.get("FASTAST_NO_PROGRESS")}


def set_progress(enabled: bool) -> None:
    """Turn every progress bar of the engine on or off (process-wide)."""
    _state["enabled"] = enabled


def progress_enabled() -> bool:
    """Whether progress bars are currently shown."""
    return _state["enabled"]


def _progress(*, transfer: bool = False) -> Progress:
    """A rich Progress on stderr: counts for items, bytes and speed for transfers."""
    counter = (DownloadColumn(), TransferSpeedColumn()) if transfer else (MofNCompleteColumn(),)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *counter,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield from `items` while showing a progress bar (or nothing when disabled)."""
    if not progress_enabled():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with _progress() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A bar of `total` steps; yields the function that advances it by one (a no-op when
    progress is off). For work driven by callbacks, where `track` does not fit."""
    if not progress_enabled():
        yield lambda: None
        return
    with _progress() as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


class ByteProgress:
    """A byte counter with a bar: call `advance(n)` as data flows; a no-op when disabled."""

    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, num_bytes: int) -> None:
        """Record `num_bytes` more bytes done."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, num_bytes)


@contextmanager
def byte_progress(description: str, total: int | None, done: int = 0) -> Iterator[ByteProgress]:
    """A context giving a ByteProgress for downloads and archive extraction."""
    if not progress_enabled():
        yield ByteProgress(None, None)
        return
    with _progress(transfer=True) as progress:
        task = progress.add_task(description, total=total, completed=done)
        yield ByteProgress(progress, task)
