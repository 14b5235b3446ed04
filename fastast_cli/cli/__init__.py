"""The `fastast` command line: parses flags, loads recipes and calls the engine.

Each subcommand lives in its own module and registers itself on `app`; no engine module
imports anything from here. The commands (and torch) are imported on first use of `app`, so
that `main` can turn a Ctrl-C during those slow imports into a quiet exit.
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
    """Console entry point of `fastast` and `python -m fastast_cli`: SIGTERM and SIGHUP are
    taken like Ctrl-C (fastast_cli.signals)."""
    from fastast_cli.signals import exit_code, install_stop_handlers, signal_name

    install_stop_handlers()
    try:
        app = _load_app()
    except KeyboardInterrupt as error:
        print(f"interrupted while starting ({signal_name(error)})", file=sys.stderr)
        sys.exit(exit_code(error))
    app()


__all__ = ["app", "main"]
