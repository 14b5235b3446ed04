"""One path for every stop request: Ctrl-C (SIGINT), SIGTERM (what Slurm, Kubernetes and
`kill` send) and SIGHUP (a closed terminal) all raise `KeyboardInterrupt` in the main thread, so
whatever saves and exits on Ctrl-C (training saves `last.pt`, `sweep` keeps its rows, `prepare`
removes its temporaries) does the same on the other two.

SIGTERM and SIGHUP raise `Stopped`, a `KeyboardInterrupt` that remembers its signal: the CLI
names it and exits with 128 + its number (143, 129), as a shell reports a process it ended;
Ctrl-C stays a plain KeyboardInterrupt and exit code 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop request by signal (SIGTERM, SIGHUP), taken like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(error: BaseException | None) -> str:
    """How a stop is named to the user: `Ctrl-C`, or the signal (`SIGTERM`)."""
    return signal.Signals(error.signum).name if isinstance(error, Stopped) else "Ctrl-C"


def exit_code(error: BaseException | None) -> int:
    """128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + (error.signum if isinstance(error, Stopped) else signal.SIGINT)


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def install_stop_handlers() -> None:
    """SIGTERM and SIGHUP raise `Stopped` (Ctrl-C already raises KeyboardInterrupt). Called
    once by the CLI's entry point, in the main thread; DataLoader workers forked later inherit
    the handlers and leave quietly, as they do on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) in (signal.SIG_DFL, None):  # an embedding app's handler stays
            signal.signal(signum, _raise_stopped)


def _default(signum: int) -> object:
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader's `worker_init_fn`: its workers ignore SIGTERM and SIGHUP. A scheduler
    signals the whole process group; a worker dying of it would make the main process fail with
    'DataLoader worker killed' before its own stop request is taken. The main process stops the
    workers itself when it saves (they also leave when it dies)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold off Ctrl-C, SIGTERM and SIGHUP until the block is done, then raise the first one
    received (as its handler would have): for writes that must finish together (a log row and
    the checkpoint that matches it).

    Outside the main thread (where signal handlers cannot be set) the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda number, frame: received.append(number))
                for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else _default(signum))
    if received:
        first = received[0]
        handler = previous[first]
        if getattr(handler, "records_stops", False):
            handler(first, None)  # an enclosing `recorded_stops` takes it instead
            return
        if first != signal.SIGINT and handler in (signal.SIG_DFL, None):
            signal.raise_signal(first)  # no handler of ours: the default action, as without us
        raise stop_exception(first)


def stop_exception(signum: int) -> KeyboardInterrupt:
    """What a stop request by `signum` raises: KeyboardInterrupt for Ctrl-C, else `Stopped`."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


@contextmanager
def recorded_stops() -> Iterator[list[int]]:
    """Within the block, Ctrl-C, SIGTERM and SIGHUP are recorded in the yielded list (signal
    numbers, in order) instead of raised, and `deferred_interrupts` blocks inside hand theirs
    on to it: for a job whose processes must stop at one agreed point (torchrun's ranks stop at
    the same step, or one would wait forever in a collective the others left).

    Outside the main thread the block runs as is (and the list stays empty).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    record.records_stops = True  # type: ignore[attr-defined]
    previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else _default(signum))
