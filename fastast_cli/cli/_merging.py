"""Options shared by the commands that run a model with token merging: how many tokens a block
merges, the schedule and proportional attention. Each defaults to what the checkpoint stores
(`models.merging.MergeSettings`); a flag given overrides it."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class Schedule(str, Enum):
    constant = "constant"
    decreasing = "decreasing"


def merge_r_option(scope: str = "ToMe") -> typer.models.OptionInfo:
    """The `--r` option; `scope` says what it applies to (e.g. `ToMe; ASTs`)."""
    return typer.Option("--r", min=0, help=(
        f"Tokens merged per block ({scope}). Default: what the checkpoint was trained with "
        "(0 for checkpoints that record none)."))


ScheduleOption = Annotated[Schedule | None, typer.Option(
    help="r per block: constant, or decreasing from 2r to 0 (same total). Default: the "
    "checkpoint's (constant for checkpoints that record none, and without a checkpoint).")]
ProportionalAttentionOption = Annotated[bool | None, typer.Option(
    "--proportional-attention/--no-proportional-attention", help=(
        "ToMe's proportional attention. Default: the checkpoint's (on for checkpoints that "
        "record none, as for models used off the shelf, and for random models)."),
    show_default=False)]


def schedule_name(schedule: Schedule | None) -> str | None:
    """The schedule's name for the engine, None when the flag was not given."""
    return schedule.value if schedule is not None else None
