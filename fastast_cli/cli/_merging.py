"""Options shared by the commands that run a model with token reduction: the method, how many
tokens a block removes, the schedule and proportional attention. Each defaults to what the
checkpoint stores (`models.reduction.settings.MergeSettings`); a flag given overrides it.
Method names are checked by the engine's registry (`models.reduction.check_method`)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from fastast_cli.errors import FastASTError
from fastast_cli.models.reduction import DEFAULT_METHOD, METHODS, check_method


class Schedule(str, Enum):
    constant = "constant"
    decreasing = "decreasing"


def merge_r_option(scope: str = "every method") -> typer.models.OptionInfo:
    """The `--r` option; `scope` says what it applies to (e.g. `ASTs`)."""
    return typer.Option("--r", min=0, help=(
        f"Tokens removed per block by --method ({scope}). Default: what the checkpoint was "
        "trained with (0 for checkpoints that record none)."))


ScheduleOption = Annotated[Schedule | None, typer.Option(
    help="r per block: constant, or decreasing from 2r to 0 (same total). Default: the "
    "checkpoint's (constant for checkpoints that record none, and without a checkpoint).")]
ProportionalAttentionOption = Annotated[bool | None, typer.Option(
    "--proportional-attention/--no-proportional-attention", help=(
        "ToMe's proportional attention. Default: the checkpoint's (on for checkpoints that "
        "record none, as for models used off the shelf, and for random models)."),
    show_default=False)]


MethodOption = Annotated[str | None, typer.Option(help=(
    f"Token reduction method: {', '.join(METHODS)} (ToMe, PiToMe, EViT, Token Fusion, seeded "
    f"random merges). Default: the checkpoint's ({DEFAULT_METHOD} for checkpoints that record "
    "none)."),
    show_default=False)]


def method_name(method: str | None) -> str | None:
    """The `--method` given, checked by the engine's registry; None when not given."""
    if method is None:
        return None
    try:
        return check_method(method)
    except ValueError as error:
        raise FastASTError(str(error)) from None


def method_names(methods: str) -> list[str]:
    """A comma list of methods (`tome,pitome`), each checked, in order, without repeats."""
    names = [name.strip() for name in methods.split(",") if name.strip()]
    if not names:
        raise FastASTError(f"--method {methods!r} names no method: use {', '.join(METHODS)}")
    return list(dict.fromkeys(method_name(name) for name in names))


def schedule_name(schedule: Schedule | None) -> str | None:
    """The schedule's name for the engine, None when the flag was not given."""
    return schedule.value if schedule is not None else None
