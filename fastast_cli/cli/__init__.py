"""The `fastast` command line: parses flags, loads recipes and calls the engine.

Each subcommand lives in its own module and registers itself on `app`; no engine module
imports anything from here.
"""

from fastast_cli.cli import (  # noqa: F401
    evaluate,
    predict,
    prepare,
    report,
    sweep,
    train,
    visualize,
)
from fastast_cli.cli._app import app


def main() -> None:
    """Console entry point of `fastast` and `python -m fastast_cli`."""
    app()


__all__ = ["app", "main"]
