"""Token reduction a deployed model has baked in, by method name.

The methods are the engine's (`models.reduction.METHODS`: tome, pitome, evit, tofu, random,
checked there); ONNX metadata and backend cache keys record the method's name.
"""

from __future__ import annotations

from torch import nn

from fastast_cli.errors import FastASTError
from fastast_cli.models.reduction import check_method


def apply_reduction(model: nn.Module, method: str, r: int, schedule: str = "constant") -> None:
    """Set `model` to reduce tokens with `method` at rate `r` (models that merge tokens: ASTs
    and ElasticASTs, keeping their proportional attention; r = 0 leaves any other model as it
    is)."""
    try:
        check_method(method)
        if not model.merges_tokens:
            if r:
                raise FastASTError("token reduction (--r) needs an AST checkpoint")
            return
        model.merging = model.merging.overridden(r=r, schedule=schedule, method=method)
    except ValueError as error:
        raise FastASTError(str(error)) from None
