"""Token reduction a deployed model has baked in, by method name.

The methods are the engine's (`models.reduction.METHODS`: tome, pitome, evit, tofu, random); ONNX
metadata and backend cache keys record the method's name.
"""

from __future__ import annotations

from torch import nn

from fastast_cli.errors import FastASTError
from fastast_cli.models.reduction import METHODS


def check_method(method: str) -> str:
    """`method` when it names a token-reduction method; one line naming the choices if not."""
    if method not in METHODS:
        raise FastASTError(f"unknown token reduction method {method!r}: choose one of "
                           f"{', '.join(METHODS)}")
    return method


def apply_reduction(model: nn.Module, method: str, r: int, schedule: str = "constant") -> None:
    """Set `model` to reduce tokens with `method` at rate `r` (models that merge tokens: ASTs
    and ElasticASTs, keeping their proportional attention; r = 0 leaves any other model as it
    is)."""
    check_method(method)
    if not model.merges_tokens:
        if r:
            raise FastASTError("token reduction (--r) needs an AST checkpoint")
        return
    try:
        model.set_r(r, schedule, model.proportional_attention, method=method)
    except ValueError as error:
        raise FastASTError(str(error)) from None
