"""Commands that spread their work over the processes of a torchrun job.

`torchrun --nproc_per_node N -m fastast_cli evaluate ...` (or `predict`) starts N copies of the
command: each joins the process group, scores its shard of the clips or files (see
`fastast_cli.distributed`), and the scores are gathered in order. Rank 0 alone prints and writes:
on the other ranks the console is quiet and the options naming outputs are cleared.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from fastast_cli.cli._app import console
from fastast_cli.devices import resolve_device
from fastast_cli.distributed import close_ranks, init_ranks

F = TypeVar("F", bound=Callable[..., Any])


def under_torchrun() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def torchrun_command(outputs: dict[str, Any]) -> Callable[[F], F]:
    """Decorate a command so that under torchrun it joins the job (on the device its `device`
    option names) and, on every rank but the first, runs with each option of `outputs` set to
    the value given there (no output file, no JSON on stdout), `quiet` set and the console
    silenced. Without torchrun the command runs as it is."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not under_torchrun():
                return command(*args, **kwargs)
            ranks = init_ranks(resolve_device(kwargs.get("device", "auto")))
            quiet_before = console.quiet
            if not ranks.is_main:
                kwargs.update(outputs, quiet=True)
                console.quiet = True
            try:
                return command(*args, **kwargs)
            finally:
                console.quiet = quiet_before
                close_ranks(ranks)

        return wrapper  # type: ignore[return-value]

    return decorate
