"""`fastast prepare`: turn downloaded datasets into AST datafiles and a manifest."""

from __future__ import annotations

import typer

from fastast_cli.cli._app import app, user_errors
from fastast_cli.errors import FastASTError


@app.command(help="Prepare a dataset (esc50, speechcommands, audioset, folder, demo). "
             "Not implemented yet: arrives with the data milestone.")
@user_errors
def prepare(dataset: str = typer.Argument(..., help="Dataset to prepare.")) -> None:
    raise FastASTError("`fastast prepare` is not implemented yet (planned: data milestone).")
