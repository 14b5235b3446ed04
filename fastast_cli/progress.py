"""Progress of long work on stderr: rich bars on a terminal, plain lines in a log file.

Every long step of the engine and the CLI (prepare, downloads, training epochs, evaluation,
sweeps, prediction over many files) reports through a `Task`:

- stderr is a terminal: a rich progress bar (tasks open at the same time share one display);
- stderr is a file or a pipe (`nohup`, cluster jobs, CI): one plain line about every
  `FASTAST_PROGRESS_INTERVAL` seconds (30 by default) and one when the task ends, e.g.
  `epoch 2/10: step 40/120 (33%), loss 0.6931, 45.2 samples/s, elapsed 0:00:30, remaining 0:01:00`;
- progress turned off (`--quiet`, `set_progress(False)` or `FASTAST_NO_PROGRESS=1`): nothing.

Under torchrun only rank 0 reports (the others would repeat its lines).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

T = TypeVar("T")

INTERVAL_ENV = "FASTAST_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0

_state = {"enabled": not os.environ.get("FASTAST_NO_PROGRESS")}
_main_process = os.environ.get("RANK", "0") == "0"  # torchrun's global rank
_shared: dict[str, Any] = {"progress": None, "users": 0}  # the one rich display on a terminal


def set_progress(enabled: bool) -> None:
    """Turn every progress bar and line on or off (process-wide)."""
    _state["enabled"] = enabled


def progress_enabled() -> bool:
    """Whether progress is currently shown (never on a torchrun rank other than 0)."""
    return _state["enabled"] and _main_process


def progress_interval() -> float:
    """Seconds between plain progress lines: `FASTAST_PROGRESS_INTERVAL`, else 30."""
    try:
        seconds = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return seconds if math.isfinite(seconds) and seconds >= 0 else DEFAULT_INTERVAL_S


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    whole = int(max(seconds, 0))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class _CountColumn(ProgressColumn):
    """n/N for steps; bytes done/total and speed for transfers."""

    def render(self, task: Any) -> Text:
        if task.fields.get("transfer"):
            return Text.assemble(DownloadColumn().render(task), " ",
                                 TransferSpeedColumn().render(task))
        return MofNCompleteColumn().render(task)


def _acquire_display() -> Progress:
    """The shared rich display, started on first use."""
    if _shared["progress"] is None:
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), _CountColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
            # stdout printed above the bars only when it shares the terminal; a redirected
            # stdout (a file, a pipe of JSON lines) must keep its output
            redirect_stdout=sys.stdout is not None and sys.stdout.isatty(),
        )
        progress.start()
        _shared["progress"] = progress
    _shared["users"] += 1
    return _shared["progress"]


def _release_display() -> None:
    """Stop the shared display when its last task is done."""
    _shared["users"] -= 1
    if _shared["users"] == 0:
        _shared["progress"].stop()
        _shared["progress"] = None


def _format_stat(name: str, value: float) -> str:
    if name == "samples_per_s":
        return f"{value:.1f} samples/s"
    if name == "lr":
        return f"lr {value:.2e}"
    return f"{name} {value:.4f}"


class Task:
    """One piece of long work of `total` steps (None: unknown); see the module docstring.

    transfer: steps are bytes; transient: on a terminal the bar disappears when done instead of
    leaving a summary line (the caller prints its own); done: steps already done (resumes).
    """

    def __init__(self, description: str, total: int | None, *, transfer: bool = False,
                 transient: bool = False, done: int = 0) -> None:
        self.description, self.total = description, total
        self.transfer, self.transient = transfer, transient
        self.count = self.first = done
        self.stats: dict[str, float] = {}
        self.started = self.last_line = time.monotonic()
        self.printed = -1  # the count of the last plain line
        self.interval = progress_interval()
        self.mode = "off"
        if progress_enabled():
            self.mode = "bar" if Console(stderr=True).is_terminal else "lines"
        self.display: Progress | None = None
        if self.mode == "bar":
            self.display = _acquire_display()
            self.task_id = self.display.add_task(description, total=total, completed=done,
                                                 transfer=transfer, stats="")

    def advance(self, steps: int = 1, **stats: float) -> None:
        """Record `steps` more steps done; `stats` (loss, lr, samples_per_s, ...) are shown."""
        self.count += steps
        self.stats.update(stats)
        if self.display is not None:
            text = "  ".join(_format_stat(k, v) for k, v in self.stats.items())
            self.display.update(self.task_id, advance=steps, stats=text)
        elif self.mode == "lines" and time.monotonic() - self.last_line >= self.interval:
            self._print_line()

    def line(self) -> str:
        """The plain progress line: step n/N, stats, speed, elapsed and remaining time."""
        elapsed = time.monotonic() - self.started
        rate = (self.count - self.first) / elapsed if elapsed > 0 else 0.0
        parts = [self._count_text(), *(_format_stat(k, v) for k, v in self.stats.items())]
        if "samples_per_s" not in self.stats:
            parts.append(f"{rate / 1e6:.1f} MB/s" if self.transfer else f"{rate:.1f}/s")
        parts.append(f"elapsed {clock(elapsed)}")
        if self.total is not None and rate > 0 and self.count < self.total:
            parts.append(f"remaining {clock((self.total - self.count) / rate)}")
        return f"{self.description}: " + ", ".join(parts)

    def _count_text(self) -> str:
        if self.transfer:
            total = f"/{self.total / 1e6:.1f}" if self.total else ""
            return f"{self.count / 1e6:.1f}{total} MB"
        if not self.total:
            return f"step {self.count}"
        return f"step {self.count}/{self.total} ({100 * self.count / self.total:.0f}%)"

    def _print_line(self) -> None:
        sys.stderr.write(self.line() + "\n")
        sys.stderr.flush()
        self.last_line, self.printed = time.monotonic(), self.count

    def close(self) -> None:
        """End the task: a last line (plain mode always; on a terminal unless transient)."""
        if self.mode == "off":
            return
        if self.display is not None:
            self.display.remove_task(self.task_id)
            if not self.transient:
                self.display.console.print(self.line(), markup=False, highlight=False)
            self.display = None
            _release_display()
        elif self.printed != self.count:
            self._print_line()
        self.mode = "off"


@contextmanager
def task(description: str, total: int | None, **options: Any) -> Iterator[Task]:
    """A `Task` closed at the end of the block (options as for `Task`)."""
    work = Task(description, total, **options)
    try:
        yield work
    finally:
        work.close()


def track(items: Iterable[T], description: str, total: int | None = None,
          transient: bool = False) -> Iterator[T]:
    """Yield from `items` while reporting progress (transient: see `Task`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total, transient=transient) as work:
        for item in items:
            yield item
            work.advance()


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A task of `total` steps; yields the function that advances it by one. For work driven by
    callbacks, where `track` does not fit."""
    with task(description, total) as work:
        yield lambda: work.advance()


class ByteProgress:
    """A byte counter: call `advance(n)` as data flows."""

    def __init__(self, work: Task) -> None:
        self._work = work

    def advance(self, num_bytes: int) -> None:
        """Record `num_bytes` more bytes done."""
        self._work.advance(num_bytes)


@contextmanager
def byte_progress(description: str, total: int | None, done: int = 0) -> Iterator[ByteProgress]:
    """A context giving a ByteProgress for downloads and archive extraction."""
    with task(description, total, transfer=True, done=done) as work:
        yield ByteProgress(work)
