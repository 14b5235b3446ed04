"""`fastast sweep`: throughput, and with --data accuracy, of models across token-reduction
methods and rates r."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from fastast_cli.atomic import check_output
from fastast_cli.cli._app import MaxDuration, Quiet, app, apply_max_duration, console, user_errors
from fastast_cli.cli._merging import (
    ProportionalAttentionOption,
    ScheduleOption,
    method_names,
    schedule_name,
)
from fastast_cli.cli.options import parse_backends, parse_folds, parse_r_values, parse_run
from fastast_cli.data.manifest import Manifest, load_manifest
from fastast_cli.devices import device_label, dtype_name, resolve_device
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.sweep import (
    SweepMeasurement,
    SweepOptions,
    SweepRun,
    plan_sweep,
)
from fastast_cli.evaluation.sweep_table import (
    METRIC_NAMES,
    NO_METHOD,
    UNNAMED_METRIC,
    SweepRow,
    parse_budget,
    read_table,
    recommend,
)
from fastast_cli.evaluation.throughput import default_batch_size, sweep_throughput
from fastast_cli.locks import output_lock
from fastast_cli.models.ast import AST, SIZES, build_model
from fastast_cli.models.reduction import METHODS, display_name
from fastast_cli.models.reduction.settings import MergeSettings, capped_note
from fastast_cli.presets import PRESETS
from fastast_cli.progress import progress_bar, set_progress, task
from fastast_cli.reports.plots import method_curves, plot_tradeoff
from fastast_cli.reports.tables import (
    Column,
    check_table_target,
    is_table_of,
    rich_table,
    table_header,
    write_csv,
)

Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)  # type: ignore[misc]
Size = Enum("Size", {name: name for name in SIZES}, type=str)  # type: ignore[misc]


# The spread of a setting's timed runs: max − min samples/s, % of the median (the CSV's last
# column; tables written before it are still read and resumed).
SPREAD_COLUMN = Column("spread_pct", "spread", "{:.0f}", "%")
WIDE_SPREAD_PCT = 10.0  # a spread above this gets a note: smaller speed differences are noise

THROUGHPUT_COLUMNS = [
    Column("r", "r"),
    Column("tokens", "tokens left"),
    Column("gflops", "GFLOPs/sample", "{:.2f}"),
    Column("samples_per_s", "samples/s", "{:.2f}"),
    Column("speedup", "speedup", "{:.2f}", "x"),
    Column("flop_speedup", "FLOP speedup", "{:.2f}", "x"),
    SPREAD_COLUMN,
]
BACKEND_COLUMN = Column("backend", "backend")
# The throughput CSV's last columns: what the timing ran with (the console table's title).
THROUGHPUT_TIMING_COLUMNS = [Column("device", "device"), Column("dtype", "dtype"),
                             Column("batch", "timing batch"), Column("threads", "threads")]


METHOD_COLUMN = Column("method", "method")


# The CSV's last columns, what every row was timed and scored with (the timing batch is its own
# column; the console table's title names them): tables written before them have none.
TIMING_COLUMNS = [Column("device", "device"), Column("dtype", "dtype"),
                  Column("threads", "threads")]


def metric_columns(metric: str, method: bool = True) -> list[Column]:
    """Columns of a sweep with data, as the console shows them; `metric` names the metric
    column (its key and header); `method`: with the method column (tables written before it
    have none)."""
    return [
        Column("run", "run"),
        *([METHOD_COLUMN] if method else []),
        Column("r", "r"),
        Column(metric, metric, "{:.4f}"),
        Column("metric_std", "±", "{:.4f}"),
        Column("drop", "change", "{:+.4f}"),
        Column("samples_per_s", "samples/s", "{:.2f}"),
        Column("speedup", "speedup", "{:.2f}", "x"),
        Column("tokens", "tokens left"),
        Column("gflops", "GFLOPs", "{:.2f}"),
        Column("checkpoint", "checkpoint"),
        Column("split", "split"),
        Column("batch", "timing batch"),
    ]


# The CSV's last column (not shown on the console, where the table's title says it): the
# schedule and proportional attention each row's metric was measured with (`fastast report`
# names them). A table written before it existed is still resumed.
MERGING_COLUMN = Column("merging", "merging")


def csv_columns(metric: str, method: bool = True, current: bool = True) -> list[Column]:
    """Columns of a data sweep's CSV; its metric column is named after `metric`; `current`:
    with the timing spread and what the timing ran with (device, dtype, threads): tables
    written before them have neither."""
    return [*metric_columns(metric, method), MERGING_COLUMN,
            *([SPREAD_COLUMN, *TIMING_COLUMNS] if current else [])]


# On the console samples/s and its spread share a cell: `409.12 ±2%` (± half the spread).
SPEED_SHOWN = Column("speed_shown", "samples/s")


def console_columns(columns: Sequence[Column]) -> list[Column]:
    """The console's columns of a sweep table: the CSV's but the checkpoint (it repeats the
    run's name; the CSV keeps it), with samples/s and its spread in one cell."""
    return [SPEED_SHOWN if column.key == "samples_per_s" else column for column in columns
            if column.key not in ("checkpoint", SPREAD_COLUMN.key)]


def with_speed_shown(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records with their `SPEED_SHOWN` cell (the median; ± half the spread when known)."""
    shown = []
    for record in records:
        spread = record.get("spread_pct")
        text = f"{record['samples_per_s']:.2f}" + ("" if spread is None else f" ±{spread / 2:.0f}%")
        shown.append({**record, SPEED_SHOWN.key: text})
    return shown


# Console columns said once in the title when every row holds the same value.
CONSTANT_COLUMNS = ("run", "method", "split", "batch", "backend")


def is_sweep_table(out: Path) -> bool:
    """Whether `out` is a data sweep's CSV: of any metric, with or without the method column,
    and with any of the columns added over time (merging, spread, timing) in their order or
    none; a rerun resumes from it."""
    header = table_header(out)
    if header is None:
        return False
    later = [column.key for column in (MERGING_COLUMN, SPREAD_COLUMN, *TIMING_COLUMNS)]
    for metric in (*METRIC_NAMES, UNNAMED_METRIC):
        for method in (True, False):
            base = [column.key for column in metric_columns(metric, method)]
            rest = header[len(base):]
            if header[:len(base)] == base and rest == [key for key in later if key in rest]:
                return True
    return False


def spread_note(rows: Sequence[Mapping[str, Any]], runs: int) -> str | None:
    """A note when the timed runs of some setting differ by more than WIDE_SPREAD_PCT."""
    spreads = [(row["spread_pct"], row) for row in rows if row.get("spread_pct") is not None]
    if not spreads:
        return None
    widest, row = max(spreads, key=lambda pair: pair[0])
    if widest <= WIDE_SPREAD_PCT:
        return None
    where = f"{row['run']} at r = {row['r']}" if "run" in row else f"r = {row['r']}"
    return (f"note: the {runs} timed runs of one setting differ by up to {widest:.0f}% "
            f"({where}): speed differences smaller than that are noise (a busy machine? "
            "close other programs or raise --runs)")


def sweep_model(
    checkpoint: str | None, size: str, preset: str, frames: int | None
) -> tuple[AST, str]:
    """The model to measure without data, and a line describing it. `checkpoint` is PATH or
    NAME=PATH (as with --data); one model, so no {r} or {fold} pattern."""
    if checkpoint is not None:
        from fastast_cli.models.checkpoints import load_model

        checkpoint = parse_run(checkpoint).checkpoint
        if "{r}" in checkpoint or "{fold}" in checkpoint:
            raise FastASTError(
                f"--checkpoint {checkpoint}: {{r}} and {{fold}} patterns need --data (without "
                "it, sweep measures the speed of one model)"
            )
        model = load_model(checkpoint, target_length=frames)
        config = model.config
        return model, f"{checkpoint} ({config.target_length} frames × {config.num_mel_bins} bins)"
    shape = PRESETS[preset]
    length = frames or shape.target_length
    model = build_model(size, shape.num_classes, target_length=length)
    return model, f"random {size} AST, {preset} shape ({length} frames × {shape.num_mel_bins} bins)"


def plot_path(out: Path) -> Path:
    """The PNG a data sweep writes beside its CSV `out`."""
    return out.with_suffix(".png")


def check_data_sweep_out(out: Path) -> None:
    """Before measuring: the CSV is absent or a sweep table (a rerun resumes from it), and the
    plot beside it is not a file of the user's (a PNG there with no sweep table is)."""
    if out.exists() and is_sweep_table(out):
        check_output(out, folder=False)
    else:
        check_table_target(out, csv_columns("accuracy"))
    plot = plot_path(out)
    if plot == out:
        raise FastASTError(f"--out {out} names the CSV (e.g. sweep.csv); the plot goes beside it")
    check_output(plot, folder=False)
    if plot.exists() and not out.exists():
        raise FastASTError(f"{plot} exists but {out} does not: the plot would replace a file "
                           "that is not from this sweep; move it or pick another --out")


def capped_rows_note(rows: list[SweepRow]) -> str | None:
    """A one-line note when a larger r left as many tokens as a smaller one (merging capped)."""
    for run in dict.fromkeys(row.run for row in rows):
        mine = sorted({row.r: row for row in rows if row.run == run}.values(),
                      key=lambda row: row.r)  # tokens per r: the same for every method
        for before, after in zip(mine, mine[1:], strict=False):
            if after.r > before.r > 0 and after.tokens == before.tokens:
                return (f"note: {run}: r={after.r} leaves {after.tokens} tokens, as r={before.r} "
                        "does: the model cannot merge more (the rows from there are capped)")
    return None


def data_sweep(
    manifest: Manifest, specs: list[str], rs: list[int], out: Path | None, budget: str | None,
    options: SweepOptions,
) -> None:
    """Metric and throughput per run, method and r: plan (resuming from `out`), measure, and
    write the CSV after each row; then the table, its notes, the plot (one curve per run and
    method) and the budget's choice (the best method and r of each run)."""
    runs = [parse_run(spec) for spec in specs]
    manifest.datafile(options.split or manifest.eval_split, options.folds[0])  # an unknown
    # split fails here, clearly
    with output_lock(out, "sweep --out") if out is not None else nullcontext():
        _data_sweep(manifest, runs, rs, out, budget, options)


def _data_sweep(
    manifest: Manifest, runs: list[SweepRun], rs: list[int], out: Path | None,
    budget: str | None, options: SweepOptions,
) -> None:
    """`data_sweep` with its CSV locked."""
    plan = plan_sweep(runs, rs, manifest, options, read_table(out) if out is not None else None)
    measurement = SweepMeasurement(plan, manifest, options)
    metric = measurement.metric
    # finished rows are done steps, not measured ones: the time left comes from new rows only
    with task("sweeping", plan.row_count, done=len(plan.rows)) as work:
        rows = measurement.retimed()  # the kept rows, timed in this run's loop
        for row in measurement.rows():
            rows = plan.ordered([*rows, row])
            if out is not None:
                write_csv(out, [row.to_dict(metric) for row in rows], csv_columns(metric))
            work.advance()
    records = [row.to_dict(metric) for row in rows]
    merging = "".join(sorted({f"; {row.run}: {row.merging}" for row in rows if row.merging}))
    methods = sorted({row.method for row in rows if row.method != NO_METHOD})
    method_text = f"; method {methods[0]} (none at r = 0)" if len(methods) == 1 else ""
    console.print(rich_table(
        f"Sweep on {manifest.path}, {plan.split} split ({metric}; change vs r={rs[0]}; "
        f"samples/s on {measurement.timing_input}, median of {options.runs} runs ± half "
        "their spread"
        f"{merging}{method_text}; {timing_line(rows)})", with_speed_shown(records),
        console_columns(metric_columns(metric, len(methods) > 1)),
        keys=2 + (len(methods) > 1), constant=CONSTANT_COLUMNS,
    ))
    for note in sorted(measurement.notes):
        console.print(f"note: {note}")
    for note in (capped_rows_note(rows), spread_note(records, options.runs)):
        if note:
            console.print(note)
    if out is not None:
        write_csv(out, records, csv_columns(metric))  # also a table read from an older CSV
        plot = plot_tradeoff(
            method_curves(records), "samples_per_s", metric, "r", plot_path(out),
            f"{metric} ({plan.split} split) against throughput per method and r "
            f"({manifest.dataset})", x_label="samples/s", y_label=metric, series_key="curve",
        )
        console.print(f"wrote {out} and {plot}")
    if budget is not None:
        for run in runs:
            best = recommend([row for row in rows if row.run == run.name], budget)
            console.print(
                f"{run.name}: no method and r meet --budget {budget}" if best is None else
                f"{run.name}: {choice(best)} meets --budget {budget} with the best {metric} "
                f"(change {best.drop:+.4f}, {best.samples_per_s:.1f} samples/s, "
                f"{best.speedup:.2f}x)"
            )


def timing_line(rows: list[SweepRow]) -> str:
    """What the rows were timed and scored with, e.g. `cpu (AMD EPYC), fp32, 2 threads`
    (rows from tables written before it was recorded: `not recorded`)."""
    settings = dict.fromkeys(
        f"{row.device}, {row.dtype}, {row.threads} thread{'s' if row.threads != 1 else ''}"
        if row.device else "not recorded" for row in rows)
    return "timed on " + " | ".join(settings)


def choice(row: SweepRow) -> str:
    """A row's method and r, e.g. `PiToMe r=16` (`no reduction (r=0)` at r = 0)."""
    if row.method == NO_METHOD:
        return f"no reduction (r={row.r})"
    return f"{display_name(row.method)} r={row.r}"


@app.command(
    help="Measure inference throughput and FLOPs at each merging rate r (on random input of "
    "the model's shape), and with --data also the metric on a prepared dataset (the paper's "
    "Tables 1 and 2), for one or several token-reduction methods (--method). Timed runs of "
    "all methods and r values are interleaved so that machine load hits them alike; speedups "
    "are relative to the first r, measured in the same run (r = 0 once: no method reduces a "
    "token there)."
)
@user_errors
def sweep(
    r: Annotated[str, typer.Option(
        "--r", help="Merging rates: start:stop:step (stop included) or a list 0,8,16.")
    ] = "0:40:10",
    method: Annotated[str | None, typer.Option(help=(
        f"Token reduction methods, a comma list of {', '.join(METHODS)} (e.g. "
        "tome,pitome,evit): with --data one row per method and r, one curve per method, all "
        "timed in one loop against one r = 0 row. Default: each checkpoint's own (tome for "
        "checkpoints that record none)."), show_default=False)] = None,
    data: Annotated[Path | None, typer.Option(
        help="Prepared dataset (manifest.yaml or folder): also evaluate each checkpoint at "
        "each r.")] = None,
    checkpoint: Annotated[list[str] | None, typer.Option(
        help="Checkpoint to sweep, as PATH or NAME=PATH; repeat for runs side by side. A "
        "path with {r} takes one checkpoint per r (Train+Inf), with {fold} one per fold.")
    ] = None,
    folds: Annotated[str | None, typer.Option(
        help="Cross-validation folds for {fold} checkpoints, e.g. 1-5 (mean ± std).")] = None,
    split: Annotated[str | None, typer.Option(
        help="Split to score with --data (default: test, or eval, where the dataset has one; "
        "valid selects models and is scored only when asked or when it is all there is).")
    ] = None,
    budget: Annotated[str | None, typer.Option(
        help="Recommend the method and r with the best metric that reach this speed: "
        "samples/s (e.g. 120) or a speedup (e.g. 1.5x).")] = None,
    preset: Annotated[Preset, typer.Option(
        help="Input shape when no checkpoint is given: esc50 (512 frames), speechcommands "
        "(128) or audioset (1024).")] = "esc50",  # type: ignore[assignment]
    frames: Annotated[int | None, typer.Option(
        min=16, help="Input length in 10 ms frames, overriding the preset or checkpoint "
        "(throughput only).")] = None,
    model_size: Annotated[Size, typer.Option(
        "--model", help="Size of the randomly initialised AST (without --checkpoint).")
    ] = "base",  # type: ignore[assignment]
    schedule: ScheduleOption = None,
    proportional_attention: ProportionalAttentionOption = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help=(
        "Samples per timed forward pass. Default: on CUDA the largest of 256, 128, 64, ... "
        "that fits in memory (ToMe times batches of 64–256); 8 on CPU. Printed with the "
        "table."))] = None,
    eval_batch_size: Annotated[int, typer.Option(
        min=1, help="Clips per forward pass when evaluating.")] = 32,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")
                      ] = "auto",
    dtype: Annotated[str, typer.Option(
        help="Precision of scoring and timing alike: fp32 (the default, as AST evaluates), "
        "fp16 or bf16 (autocast mixed precision; auto: fp16 on CUDA, fp32 on CPU). Recorded "
        "with every row.")] = "fp32",
    warmup: Annotated[int, typer.Option(
        min=0, help="Untimed forward passes per r before timing.")] = 2,
    runs: Annotated[int, typer.Option(
        min=1, help="Timed forward passes per r (the median is reported).")] = 5,
    out: Annotated[Path | None, typer.Option(
        help="CSV of the table. With --data it is written row by row, a rerun with the same "
        "--out skips the rows it holds, and a PNG plot of the metric against samples/s is "
        "written beside it. A file there that is not a sweep table of the same kind is "
        "refused, never replaced.")] = None,
    backend: Annotated[str, typer.Option(
        help="Inference backends, e.g. torch,compile,onnxruntime: each r is timed (and with "
        "--data evaluated) on each, interleaved in one run. auto: at each r the fastest here "
        "(measured once, cached; the table names it); compile: torch.compile; onnxruntime: "
        "ONNX exports cached in $FASTAST_CACHE, else the user cache folder; "
        "onnxruntime-int8: the same with int8 linear layers (e.g. torch,onnxruntime,"
        "onnxruntime-int8 measures int8 beside fp32).")
    ] = "auto",
    quiet: Quiet = False,
    max_duration: MaxDuration = None,
) -> None:
    """Sweep r: parse, pick the mode (with or without data), print and save."""
    set_progress(not quiet)
    apply_max_duration(max_duration)
    rs = parse_r_values(r)
    if budget is not None:
        if data is None:
            raise FastASTError("--budget picks among evaluated rows: it needs --data (and "
                               "--checkpoint)")
        parse_budget(budget)  # a bad value is refused now, not after the sweep
    methods = method_names(method) if method is not None else [None]
    backends = parse_backends(backend)
    dtype = dtype_name(dtype, resolve_device(device))  # a bad --device or --dtype fails here
    if data is not None:
        if not checkpoint:
            raise FastASTError("--data needs at least one --checkpoint to evaluate")
        if out is not None:
            check_data_sweep_out(out)
        options = SweepOptions(
            folds=tuple(parse_folds(folds)) if folds else (None,), split=split,
            batch_size=batch_size, eval_batch_size=eval_batch_size,
            device=resolve_device(device), dtype=dtype, schedule=schedule_name(schedule),
            proportional_attention=proportional_attention, warmup=warmup, runs=runs,
            backends=tuple(backends), methods=tuple(methods))
        data_sweep(load_manifest(data), checkpoint, rs, out, budget, options)
        return
    if checkpoint and len(checkpoint) > 1:
        raise FastASTError("without --data, sweep one --checkpoint at a time")
    if len(methods) > 1:
        raise FastASTError("without --data, sweep one --method at a time (with --data, "
                           "methods are compared in one table)")
    auto = backends == ["auto"]  # one backend per r, picked: named in the last column
    columns = (THROUGHPUT_COLUMNS if backends == ["torch"] or auto
               else [BACKEND_COLUMN, *THROUGHPUT_COLUMNS])
    saved_columns = [*columns, *THROUGHPUT_TIMING_COLUMNS, *([BACKEND_COLUMN] if auto else [])]
    if out is not None and (is_table_of(out, columns[:-1])  # from before spread and timing
                            or is_table_of(out, [*columns, *THROUGHPUT_TIMING_COLUMNS])):
        check_output(out, folder=False)
    elif out is not None:
        check_table_target(out, saved_columns)
    model, description = sweep_model(
        checkpoint[0] if checkpoint else None, model_size.value, preset.value, frames
    )
    settings = MergeSettings.from_meta(model.meta).overridden(
        None, schedule_name(schedule), proportional_attention, methods[0])
    model.merging = settings
    note = capped_note(model, max(rs), settings.schedule)
    if note:
        console.print(note)
    try:
        batch_size = batch_size or default_batch_size(model, device, dtype, rs[0],
                                                      settings.schedule)
        with progress_bar("measuring", len(backends) * len(rs) * (warmup + runs)) as advance:
            rows = sweep_throughput(
                model, rs, batch_size=batch_size, device=device, dtype=dtype,
                schedule=settings.schedule, warmup=warmup, runs=runs, on_step=advance,
                backends=backends,
            )
    except (ValueError, RuntimeError) as error:
        raise FastASTError(str(error)) from None
    timing = {"device": device_label(resolve_device(device)), "dtype": dtype,
              "batch": batch_size, "threads": torch.get_num_threads()}
    records = [{**vars(row), **timing} for row in rows]
    attention = "on" if settings.proportional_attention else "off"
    title = (f"Throughput: {description}, on {timing['device']}, {dtype}, timing batch "
             f"{batch_size}, {timing['threads']} threads, {display_name(settings.method)}, "
             f"{settings.schedule} r, proportional attention {attention}; samples/s: median of "
             f"{runs} runs ± half their spread")
    shown = console_columns([*columns, *([BACKEND_COLUMN] if auto else [])])
    console.print(rich_table(title, with_speed_shown(records), shown,
                             keys=1 + (columns[0] == BACKEND_COLUMN)))
    note = spread_note(records, runs)
    if note:
        console.print(note)
    if out is not None:
        with output_lock(out, "sweep --out"):
            replaced = out.exists()
            write_csv(out, records, saved_columns)
        console.print(f"{'replaced' if replaced else 'wrote'} {out}")
