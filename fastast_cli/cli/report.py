"""`fastast report`: the paper's Tables 1 and 2 in small, and a two-line summary, from a sweep."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fastast_cli.cli._app import app, console, user_errors
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.sweep_table import read_table
from fastast_cli.reports.summary import (
    reference_row,
    summary_lines,
    table1_caption,
    table1_rows,
    table2_rows,
)
from fastast_cli.reports.tables import Column, rich_table


class Metric(str, Enum):
    accuracy = "accuracy"
    mAP = "mAP"


def table1_columns(baseline: str, tome: str) -> list[Column]:
    return [
        Column("r", "r"),
        Column("tokens", "tokens left"),
        Column("samples_per_s", "samples/s", "{:.1f}"),
        Column("speedup", "speedup", "{:.2f}", "x"),
        Column("flop_speedup", "FLOP speedup", "{:.2f}", "x"),
        Column("inference_only", f"Inf ({baseline})", "{:.4f}"),
        Column("inference_only_drop", "change", "{:+.4f}"),
        Column("during_training", f"Train+Inf ({tome})", "{:.4f}"),
        Column("during_training_drop", "change", "{:+.4f}"),
    ]


def table2_columns(tome: str, kd: str) -> list[Column]:
    return [
        Column("r", "r"),
        Column("samples_per_s", "samples/s", "{:.1f}"),
        Column("without_kd", f"without KD ({tome})", "{:.4f}"),
        Column("with_kd", f"with KD ({kd})", "{:.4f}"),
        Column("change", "change", "{:+.4f}"),
    ]


@app.command(
    help="Tell a sweep's story (the CSV of `fastast sweep --data`): Table 1 (ToMe at inference "
    "only, on the run trained without merging, vs ToMe during training, with the merging "
    "settings each was measured with), Table 2 (without vs "
    "with distillation) and two sentences: the speedup and the metric change at --r against "
    "the plain model at r = 0, and what distillation changes at --r. All from the CSV's rows."
)
@user_errors
def report(
    sweep_csv: Annotated[Path, typer.Argument(
        help="CSV written by `fastast sweep --data ... --out`.", show_default=False)],
    baseline: Annotated[str, typer.Option(
        help="Run trained without merging (r = 0), merged at inference only.",
        show_default=False)],
    tome: Annotated[str, typer.Option(
        help="Run trained with merging, without distillation.", show_default=False)],
    r: Annotated[int, typer.Option(
        "--r", min=0, help="The r to sum up (e.g. the r the runs were trained with).",
        show_default=False)],
    kd: Annotated[str | None, typer.Option(
        help="Run trained with merging and distillation (Table 2 and the second sentence).")
    ] = None,
    metric: Annotated[Metric | None, typer.Option(
        help="Name of the sweep's metric, for the text. Default: the one the CSV's header "
        "names; accuracy for a table from before the header named it.")] = None,
) -> None:
    """Read the rows, print the tables and the summary."""
    if not sweep_csv.is_file():
        raise FastASTError(
            f"{sweep_csv} does not exist: run `fastast sweep --data ... --out` first")
    table = read_table(sweep_csv)
    if metric is not None and table.metric not in (None, metric.value):
        raise FastASTError(f"--metric {metric.value}: {sweep_csv} holds {table.metric}")
    metric = Metric(table.metric or (metric.value if metric is not None else "accuracy"))
    rows = table.rows
    reference = reference_row(rows, baseline)
    splits = ", ".join(dict.fromkeys(row.split for row in rows if row.split))
    scored = f"{metric.value}, {splits} split" if splits else metric.value
    console.print(rich_table(
        f"Table 1: ToMe at inference only vs during training ({scored}; change vs "
        f"{baseline} at r = {reference.r})\n{table1_caption(rows, baseline, tome)}",
        table1_rows(rows, baseline, tome), table1_columns(baseline, tome),
    ))
    if kd is not None:
        console.print(rich_table(
            f"Table 2: without vs with distillation ({scored})",
            table2_rows(rows, tome, kd), table2_columns(tome, kd),
        ))
    for line in summary_lines(rows, baseline=baseline, tome=tome, kd=kd, r=r,
                              metric=metric.value):
        console.print(line, markup=False)  # run names are text
