"""Token reduction: the methods by name, the one place names are checked and listed.

A merge reads in one direction, three files: `models/vit.py`'s `Block` builds a
`ReductionStep` and asks the method (`tome.py`, `pitome.py`, `evit.py`, `tofu.py`, `random.py`)
for a matching (`matching.py`), which the token state (`vit.py`'s `TokenState`) applies to
tokens, sizes, sources and the packed `Layout` (`layout.py`). r schedules and the per-block
cap are in `schedule.py`; the record a model merges by (`MergeSettings`, set as `model.merging`) in
`settings.py`. A method is one class with `name` and `match(step)`, set on a model with
`model.set_r(r, method=name)`; to add one, write it in its own module and register it in
`METHODS` (tests/test_methods.py then runs it in both layouts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastast_cli.models.reduction.evit import EViT
from fastast_cli.models.reduction.matching import ReductionMethod
from fastast_cli.models.reduction.pitome import PiToMe
from fastast_cli.models.reduction.random import RandomMerge
from fastast_cli.models.reduction.tofu import ToFu
from fastast_cli.models.reduction.tome import ToMe

METHODS: dict[str, Callable[..., ReductionMethod]] = {
    method.name: method for method in (ToMe, PiToMe, EViT, ToFu, RandomMerge)
}
# The method of new models and runs, and of checkpoint records that name none.
DEFAULT_METHOD = ToMe.name
# The name a method goes by in tables and titles.
DISPLAY_NAMES = {ToMe.name: "ToMe", PiToMe.name: "PiToMe", EViT.name: "EViT", ToFu.name: "ToFu",
                 RandomMerge.name: "random"}

__all__ = ["DEFAULT_METHOD", "METHODS", "check_method", "display_name", "make_method",
           "method_options"]


def check_method(name: str) -> str:
    """`name` when it names a method; if not, ValueError with the one message naming the
    choices (flags, the Python API, checkpoints' records and export all give it; a recipe
    words it as its other keys, `method must be one of ...`)."""
    if name not in METHODS:
        raise ValueError(f"unknown token reduction method {name!r}: choose one of "
                         f"{', '.join(METHODS)}")
    return name


def display_name(method: str) -> str:
    """The name a method goes by in tables and titles, e.g. `PiToMe` for `pitome`."""
    return DISPLAY_NAMES.get(method, method)


def method_options(method: ReductionMethod) -> dict[str, Any]:
    """The options of a method instance (`make_method(method.name, options)` rebuilds it);
    {} for methods without options (tome, evit)."""
    return dict(getattr(method, "options", {}))


def make_method(name: str, options: Mapping[str, Any] | None = None) -> ReductionMethod:
    """A reduction method by name, with its options (PiToMe: margin_start, margin_slope,
    alpha; ToFu: switch; random: seed). Raises ValueError for an unknown name or option."""
    try:
        return METHODS[check_method(name)](**dict(options or {}))
    except TypeError as error:
        raise ValueError(f"bad options for method {name!r}: {dict(options or {})}") from error
