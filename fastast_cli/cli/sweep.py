"""`fastast sweep`: throughput (and, later, accuracy) of a model across merging rates r."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from fastast_cli.cli._app import app, console, user_errors
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.throughput import sweep_throughput
from fastast_cli.models.ast import AST, SIZES, build_model
from fastast_cli.presets import PRESETS
from fastast_cli.reports.progress import progress_bar
from fastast_cli.reports.tables import Column, rich_table, write_csv

Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)  # type: ignore[misc]
Size = Enum("Size", {name: name for name in SIZES}, type=str)  # type: ignore[misc]


class Schedule(str, Enum):
    constant = "constant"
    decreasing = "decreasing"


THROUGHPUT_COLUMNS = [
    Column("r", "r"),
    Column("tokens", "tokens left"),
    Column("gflops", "GFLOPs/sample", "{:.2f}"),
    Column("samples_per_s", "samples/s", "{:.2f}"),
    Column("speedup", "speedup", "{:.2f}", "x"),
    Column("flop_speedup", "FLOP speedup", "{:.2f}", "x"),
]


def parse_r_values(spec: str) -> list[int]:
    """`start:stop:step` (stop included), `start:stop` (step 1), or a comma list `0,8,16`."""
    try:
        if ":" in spec:
            parts = [int(p) for p in spec.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = (*parts, 1) if len(parts) == 2 else parts
            if step <= 0:
                raise ValueError
            values = list(range(start, stop + 1, step))
        else:
            values = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise FastASTError(
            f"--r {spec!r} is not understood: use start:stop:step (e.g. 0:40:5) or a list (0,8,16)"
        ) from None
    if not values or min(values) < 0:
        raise FastASTError(f"--r {spec!r} must give at least one value, all >= 0")
    return values


def sweep_model(
    checkpoint: Path | None, size: str, preset: str, frames: int | None
) -> tuple[AST, str]:
    """The model to measure and a line describing it."""
    if checkpoint is not None:
        from fastast_cli.models.checkpoints import load_model

        model = load_model(checkpoint, target_length=frames)
        config = model.config
        return model, f"{checkpoint} ({config.target_length} frames × {config.num_mel_bins} bins)"
    shape = PRESETS[preset]
    length = frames or shape.target_length
    model = build_model(size, shape.num_classes, target_length=length)
    return model, f"random {size} AST, {preset} shape ({length} frames × {shape.num_mel_bins} bins)"


@app.command(
    help="Measure inference throughput and FLOPs at each merging rate r, on random input. "
    "Timed runs of all r values are interleaved so that machine load hits them alike; speedups "
    "are relative to the first r, measured in the same run."
)
@user_errors
def sweep(
    r: str = typer.Option(
        "0:40:10", "--r", help="Merging rates: start:stop:step (stop included) or a list 0,8,16."
    ),
    preset: Preset = typer.Option(
        "esc50", help="Input shape when no checkpoint is given: esc50 (512 frames), "
        "speechcommands (128) or audioset (1024)."
    ),
    frames: int | None = typer.Option(
        None, min=16, help="Input length in 10 ms frames, overriding the preset or checkpoint."
    ),
    model_size: Size = typer.Option(
        "base", "--model", help="Size of the randomly initialised AST (without --checkpoint)."
    ),
    checkpoint: Path | None = typer.Option(
        None, help="Measure this checkpoint (fastast, original AST .pth, or Hugging Face folder)."
    ),
    schedule: Schedule = typer.Option(
        Schedule.constant, help="r per block: constant, or decreasing from 2r to 0 (same total)."
    ),
    batch_size: int = typer.Option(8, min=1, help="Samples per forward pass."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    dtype: str = typer.Option(
        "auto", help="auto (fp16 autocast on CUDA, fp32 on CPU), fp32, fp16 or bf16."
    ),
    warmup: int = typer.Option(2, min=0, help="Untimed forward passes per r before timing."),
    runs: int = typer.Option(5, min=1, help="Timed forward passes per r (the median is reported)."),
    out: Path | None = typer.Option(None, help="Also write the table to this CSV file."),
) -> None:
    """Throughput half of the sweep: build or load the model, measure, print and save."""
    rs = parse_r_values(r)
    model, description = sweep_model(checkpoint, model_size.value, preset.value, frames)
    try:
        with progress_bar("measuring", len(rs) * (warmup + runs), console) as advance:
            rows = sweep_throughput(
                model, rs, batch_size=batch_size, device=device, dtype=dtype,
                schedule=schedule.value, warmup=warmup, runs=runs, on_step=advance,
            )
    except (ValueError, RuntimeError) as error:
        raise FastASTError(str(error)) from None
    records = [vars(row) for row in rows]
    title = f"Throughput: {description}, batch {batch_size}, {schedule.value} r"
    console.print(rich_table(title, records, THROUGHPUT_COLUMNS))
    if out is not None:
        write_csv(out, records, THROUGHPUT_COLUMNS)
        console.print(f"wrote {out}")
