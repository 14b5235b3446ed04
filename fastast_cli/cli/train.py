"""`fastast train-teacher` and `fastast distill`: training from labels and with CMKD."""

from __future__ import annotations

from fastast_cli.cli._app import app, user_errors
from fastast_cli.errors import FastASTError


@app.command("train-teacher", help="Train a teacher (EfficientNet-B2, AST, PaSST). "
             "Not implemented yet: arrives with the training milestone.")
@user_errors
def train_teacher() -> None:
    raise FastASTError("`fastast train-teacher` is not implemented yet (planned: training milestone).")


@app.command(help="Train an AST student with token merging and knowledge distillation. "
             "Not implemented yet: arrives with the training milestone.")
@user_errors
def distill() -> None:
    raise FastASTError("`fastast distill` is not implemented yet (planned: training milestone).")
