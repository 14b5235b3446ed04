"""Signal dispositions of a command typed at a terminal, for the tests that signal a child.

A test run started in the background (`nohup make test &`, a CI runner's job) hands its children
SIGINT and SIGHUP ignored, and fastast rightly leaves an ignored signal ignored (nohup's promise).
The tests that check what a Ctrl-C or a hang-up does start their child as a terminal would.
"""

from __future__ import annotations

import signal


def as_from_a_terminal() -> None:
    """`preexec_fn` of a child process: SIGINT, SIGHUP and SIGTERM at their defaults."""
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
