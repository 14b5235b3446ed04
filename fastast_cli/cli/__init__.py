"""The `fastast` command line: parses flags, loads recipes and calls the engine.

Each subcommand lives in its own module and registers itself on `app`; no engine module
imports anything from here. `main` imports only the module of the command it runs (see
`_app.Commands`), so `fastast --help` needs no torch; `app` (for tests and embedding) is the
application with every command registered.
"""

from __future__ import annotations

import sys
from typing import Any

INTERRUPTED = 130  # exit code of a process stopped by Ctrl-C (128 + SIGINT)


def _load_app() -> Any:
    """The Typer app with every subcommand registered (imports torch)."""
    from fastast_cli.cli import (  # noqa: F401
        evaluate,
        export,
        predict,
        prepare,
        report,
        sweep,
        train,
        visualize,
    )
    from fastast_cli.cli._app import app

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _load_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console entry point of `fastast` and `python -m fastast_cli`: the command's module is
    imported when the command runs; SIGTERM and SIGHUP are taken like Ctrl-C
    (fastast_cli.signals), and a stop during start-up exits quietly with its code. Freed host
    memory is kept for reuse (fastast_cli.host_memory), so CPU forward passes do not page-fault
    their activations in again."""
    from fastast_cli.host_memory import keep_freed_memory
    from fastast_cli.signals import exit_code, install_stop_handlers, signal_name

    install_stop_handlers()
    keep_freed_memory()
    try:
        from fastast_cli.cli._app import app
    except KeyboardInterrupt as error:
        print(f"interrupted while starting ({signal_name(error)})", file=sys.stderr)
        sys.exit(exit_code(error))
    app(prog_name="fastast")


__all__ = ["app", "main"]
