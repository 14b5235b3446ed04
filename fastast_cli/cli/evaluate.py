"""`fastast evaluate`: metrics of a checkpoint on a prepared dataset."""

from __future__ import annotations

from fastast_cli.cli._app import app, user_errors
from fastast_cli.errors import FastASTError


@app.command(help="Evaluate a checkpoint (accuracy, mAP, mAUC, d'). "
             "Not implemented yet: arrives with the training milestone.")
@user_errors
def evaluate() -> None:
    raise FastASTError("`fastast evaluate` is not implemented yet (planned: training milestone).")
