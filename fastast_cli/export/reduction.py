"""Token reduction methods a deployed model can have baked in, by name.

Each method sets a loaded AST up to reduce tokens at rate `r` with a given schedule; ONNX
metadata and backend cache keys record the method's name. Add a method by adding an entry.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fastast_cli.errors import FastASTError


def _tome(model: nn.Module, r: int, schedule: str) -> None:
    """Token Merging (Bolya et al. 2023, bipartite soft matching) in every block."""
    model.set_r(r, schedule, model.proportional_attention)


METHODS: dict[str, Callable[[nn.Module, int, str], None]] = {"tome": _tome}


def apply_reduction(model: nn.Module, method: str, r: int, schedule: str = "constant") -> None:
    """Set `model` to reduce tokens with `method` at rate `r` (models that merge tokens: ASTs
    and ElasticASTs; r = 0 leaves any other model as it is)."""
    if method not in METHODS:
        raise FastASTError(f"unknown reduction method {method!r}: choose {', '.join(METHODS)}")
    if not model.merges_tokens:
        if r:
            raise FastASTError("token reduction (--r) needs an AST checkpoint")
        return
    try:
        METHODS[method](model, r, schedule)
    except ValueError as error:
        raise FastASTError(str(error)) from None
