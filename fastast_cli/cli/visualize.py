"""`fastast visualize`: draw which spectrogram patches token merging grouped together."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastast_cli.atomic import check_output
from fastast_cli.cli._app import MaxDuration, app, apply_max_duration, console, user_errors
from fastast_cli.cli._merging import (
    MethodOption,
    ProportionalAttentionOption,
    ScheduleOption,
    method_name,
    schedule_name,
)
from fastast_cli.devices import resolve_device
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.reduction import display_name
from fastast_cli.models.reduction.settings import capped_note
from fastast_cli.reports.merge_view import draw_merge_view, file_merge_view, require_ast
from fastast_cli.reports.plots import image_format

DEFAULT_R = 8  # merging shown for checkpoints trained without it


@app.command(
    help="Draw what token merging (ToMe) grouped on one audio window: the log-mel spectrogram "
    "with each final token's patches in one colour and group boundaries in black (overlapping "
    "patches are drawn as their stride cell, so groups tile the input), beside a plot of tokens "
    "left after each block. AST checkpoints only."
)
@user_errors
def visualize(
    file: Annotated[Path, typer.Argument(help="Audio file (any rate and channel count).")],
    checkpoint: Annotated[Path, typer.Option(
        help="fastast AST checkpoint, original AST .pth or Hugging Face AST folder.")],
    out: Annotated[Path, typer.Option(
        help="Image to write (PNG; .svg or .pdf also work); replaced if it exists.")],
    method: MethodOption = None,
    r: Annotated[int | None, typer.Option("--r", min=0, help=(
        "Tokens removed per block. Default: the checkpoint's training r when it merged, "
        "else 8."))] = None,
    schedule: ScheduleOption = None,
    proportional_attention: ProportionalAttentionOption = None,
    offset: Annotated[float, typer.Option(
        min=0.0, help="Seconds into the file where the drawn window starts.")] = 0.0,
    alpha: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Opacity of the group colours over the spectrogram.")] = 0.45,
    width: Annotated[int, typer.Option(min=200, help="Image width in pixels.")] = 1400,
    height: Annotated[int, typer.Option(min=200, help="Image height in pixels.")] = 800,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda.")] = "auto",
    max_duration: MaxDuration = None,
) -> None:
    """Load the AST, track token sources on one window, draw and save the figure."""
    apply_max_duration(max_duration)
    image_format(out)  # an unwritable suffix or path fails before any work
    check_output(out, folder=False)
    model = require_ast(load_classifier(
        checkpoint, r, schedule=schedule_name(schedule),
        proportional_attention=proportional_attention, method=method_name(method),
        device=resolve_device(device),
    ), checkpoint)
    if r is None and not any(model.r_schedule):  # trained without merging: show r = 8
        model.merging = model.merging.overridden(r=DEFAULT_R)
    note = capped_note(model)
    if note:
        console.print(note)
    view = file_merge_view(model, file, offset)
    settings = model.merging
    title = (
        f"{file.name}: {view.config.num_patches} patches → {view.num_groups} tokens at "
        f"{display_name(settings.method)} r={settings.r} ({settings.schedule})"
    )
    replaced = out.exists()
    draw_merge_view(view, out, title=title, alpha=alpha, size=(width, height))
    sizes = view.group_sizes()
    console.print(
        f"{view.config.num_patches} patches merged into {view.num_groups} tokens "
        f"(+ CLS, DIST; largest group {int(sizes.max())} patches); tokens per block: "
        f"{' → '.join(str(c) for c in view.counts)}"
    )
    console.print(f"{'replaced' if replaced else 'wrote'} {out}")
