"""The Typer application and the one rule every command follows for user mistakes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fastast_cli.atomic import WRITE_FAILURES
from fastast_cli.errors import FastASTError, Interrupted
from fastast_cli.signals import exit_code, signal_name

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


def user_errors(func: F) -> F:
    """Turn a FastASTError raised by the engine into one red line on stderr and exit code 2
    (an `Interrupted` one into a yellow line and 128 + its signal); a bare Ctrl-C, SIGTERM or
    SIGHUP into one line and 128 + the signal; a file the system would not let us write or
    read (a full disk, a read-only file system, no permission) into one red line and 2."""

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
        except KeyboardInterrupt as error:
            err_console.print(f"[bold yellow]interrupted[/] ({signal_name(error)})")
            raise typer.Exit(code=exit_code(error)) from None
        except OSError as error:
            if error.errno not in WRITE_FAILURES:
                raise
            where = f"{error.filename}: " if error.filename else ""
            err_console.print(f"[bold red]error:[/] {escape(where)}{WRITE_FAILURES[error.errno]}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]

