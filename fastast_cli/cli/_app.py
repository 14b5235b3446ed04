"""The Typer application and the one rule every command follows for user mistakes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fastast_cli.data.audio import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_STREAM_S, set_max_duration
from fastast_cli.errors import FastASTError, Interrupted
from fastast_cli.values import number

app = typer.Typer(
    name="fastast",
    help="Fast Audio Spectrogram Transformers: token merging (ToMe), cross-model knowledge "
    "distillation (CMKD) and throughput sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Wide tables stay whole when output goes to a file or a pipe (rich would assume 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

Quiet = Annotated[bool, typer.Option(
    "--quiet", help="No progress (bars on a terminal, periodic lines in a log file).")]

MAX_DURATION_HELP = (
    "Longest audio file read, in seconds, checked from its header before decoding. Default: "
    f"{DEFAULT_MAX_DURATION_S / 3600:g} h for a file decoded whole (datasets, prepare, "
    f"visualize), {DEFAULT_MAX_STREAM_S / 3600:g} h for one read in windows (predict); "
    "standard input is not limited.")
MaxDuration = Annotated[float | None, typer.Option(
    "--max-duration", help=MAX_DURATION_HELP, show_default=False)]


def apply_max_duration(seconds: float | None) -> None:
    """Set the audio duration limit of this process from --max-duration (None: defaults)."""
    if seconds is not None:
        number(seconds, "--max-duration", above=0.0)
    set_max_duration(seconds)


def user_errors(func: F) -> F:
    """Turn a FastASTError raised by the engine into one red line on stderr and exit code 2
    (an `Interrupted` one into a yellow line and 130); a bare Ctrl-C into one line and 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Interrupted as error:
            err_console.print(f"[bold yellow]interrupted:[/] {error}")
            raise typer.Exit(code=error.exit_code) from None
        except FastASTError as error:
            err_console.print(f"[bold red]error:[/] {escape(str(error))}")  # [..] is text
            raise typer.Exit(code=error.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold yellow]interrupted[/] (Ctrl-C)")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]

