"""The token-reduction methods by name (`--method`, `model.set_r(r, method=...)`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastast_cli.models.reduction.base import TokenReduction
from fastast_cli.models.reduction.evit import EViT
from fastast_cli.models.reduction.pitome import PiToMe
from fastast_cli.models.reduction.random import RandomMerge
from fastast_cli.models.reduction.tofu import ToFu
from fastast_cli.models.reduction.tome import ToMe

METHODS: dict[str, Callable[..., TokenReduction]] = {
    "tome": ToMe,  # the default
    "pitome": PiToMe,
    "evit": EViT,
    "tofu": ToFu,
    "random": RandomMerge,
}


def method_options(method: TokenReduction) -> dict[str, Any]:
    """The options of a method instance (`make_method(method.name, options)` rebuilds it);
    {} for methods without options (tome, evit)."""
    return dict(getattr(method, "options", {}))


def make_method(name: str, options: Mapping[str, Any] | None = None) -> TokenReduction:
    """A reduction method by name, with its options (PiToMe: margin_start, margin_slope,
    alpha; ToFu: switch; random: seed). Raises ValueError for an unknown name or option."""
    if name not in METHODS:
        raise ValueError(f"unknown token reduction method {name!r}: choose one of "
                         f"{', '.join(METHODS)}")
    try:
        return METHODS[name](**dict(options or {}))
    except TypeError as error:
        raise ValueError(f"bad options for method {name!r}: {dict(options or {})}") from error
