"""`fastast predict`: top labels, timelines and events of audio files and streams."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fastast_cli.atomic import check_output
from fastast_cli.cli._app import (
    MaxDuration,
    Quiet,
    app,
    apply_max_duration,
    console,
    err_console,
    user_errors,
)
from fastast_cli.cli._merging import (
    MethodOption,
    ProportionalAttentionOption,
    ScheduleOption,
    merge_r_option,
    method_name,
    schedule_name,
)
from fastast_cli.cli._predict_output import (
    TimelineOptions,
    finish_json,
    one_timeline,
    print_clip,
    settings_line,
)
from fastast_cli.cli._torchrun import torchrun_command, under_torchrun
from fastast_cli.cli.options import BackendOption, DtypeOption, OnnxOption, check_dtype
from fastast_cli.data.audio import AUDIO_EXTENSIONS
from fastast_cli.data.safepath import real_path
from fastast_cli.devices import DTYPES, resolve_device
from fastast_cli.distributed import current_ranks
from fastast_cli.errors import FastASTError
from fastast_cli.inference.backends import make_forward
from fastast_cli.inference.clips import (
    ClipFailure,
    ClipScores,
    PredictionRun,
    Predictor,
    load_predictor,
    predict_files,
)
from fastast_cli.inference.timeline import check_threshold
from fastast_cli.models.reduction.settings import capped_note, merging_of
from fastast_cli.progress import set_progress
from fastast_cli.reports.plots import image_format

Outcome = ClipScores | ClipFailure


class Aggregate(str, Enum):
    mean = "mean"
    max = "max"


class TimelineClasses(str, Enum):
    all = "all"
    top = "top"


def expand_inputs(files: list[Path]) -> list[Path]:
    """Files as given; a folder becomes the audio files under it, sorted."""
    paths: list[Path] = []
    for path in files:
        if not path.is_dir():
            paths.append(path)
            continue
        # FIFOs, link loops and dangling links are kept: they fail with their reason
        found = sorted(p for p in path.rglob("*")
                       if p.suffix.lower() in AUDIO_EXTENSIONS and not p.is_dir())
        if not found:
            raise FastASTError(f"{path}: a folder without audio files "
                               f"({', '.join(AUDIO_EXTENSIONS)})")
        paths.extend(found)
    return paths


def check_outputs(inputs: list[Path], outputs: dict[str, Path | None]) -> None:
    """Refuse, before any work, an output file that cannot be written or that would overwrite
    an input file or another output."""
    taken = {real_path(path): "an input file" for path in inputs}
    for option, path in outputs.items():
        if path is None:
            continue
        if real_path(path) in taken:
            raise FastASTError(f"{option} {path} is {taken[real_path(path)]}: choose another path")
        check_output(path, folder=False, option=option)
        taken[real_path(path)] = f"also the {option} output"


@app.command(
    help="Top labels of audio files with a trained checkpoint. Any sample rate, mono or "
    "multi-channel (channels are averaged, audio resampled to 16 kHz). A clip longer than the "
    "model's input window is scored in sliding windows whose scores are averaged (or maxed); "
    "files are read in blocks, so any length fits in memory. --timeline, --events and --plot "
    "keep the per-window scores of one file; `-` reads WAV (or raw PCM with --rate) from "
    "standard input and prints each window's scores as a JSON line as it is scored. "
    "Scores are softmax probabilities for checkpoints trained with cross-entropy, per-class "
    "sigmoids otherwise; the output says which. A file that cannot be read is reported and "
    "skipped. Exit code: 0 when at least one file was scored (failures listed on stderr and in "
    "the JSON), 2 when none was or on a bad checkpoint or option. Under torchrun each process "
    "scores its share of the files and the first one prints and writes the results."
)
@user_errors
@torchrun_command({"out": None, "as_json": False})
def predict(
    files: Annotated[list[Path], typer.Argument(
        help="Audio files (wav, flac, ogg, ...), any length, rate and channel count; folders "
        "(their audio files, sorted); or - for standard input.", show_default=False)],
    checkpoint: Annotated[Path, typer.Option(
        help="fastast checkpoint (AST or CNN), original AST .pth or Hugging Face AST folder.")],
    method: MethodOption = None,
    r: Annotated[int | None, merge_r_option("ASTs")] = None,
    schedule: ScheduleOption = None,
    proportional_attention: ProportionalAttentionOption = None,
    top: Annotated[int, typer.Option("--top-k", min=1, help="Labels shown per file.")] = 5,
    how: Annotated[Aggregate, typer.Option(
        "--aggregate", help="How window scores combine on long clips: mean or max.")] = (
        Aggregate.mean),
    hop: Annotated[float | None, typer.Option(
        help="Seconds between window starts on long clips (default: half a window).")] = None,
    window: Annotated[float | None, typer.Option(
        help="Seconds per window (default: the model's input length; fixed-length models get "
        "shorter windows padded, as short clips).")] = None,
    timeline: Annotated[Path | None, typer.Option(
        help="CSV with one row per window: start_s, end_s and the scores (see "
        "--timeline-classes).")] = None,
    timeline_classes: Annotated[TimelineClasses, typer.Option(
        help="Scores per timeline row (CSV and JSON lines): all classes, or the top --top-k.")
    ] = TimelineClasses.all,
    plot: Annotated[Path | None, typer.Option(
        help="PNG heat map of the --top-k classes' scores over time (seconds).")] = None,
    events: Annotated[Path | None, typer.Option(
        help="JSON of the events (also shown as a table): per class, the spans where "
        "windows score at least the threshold, overlapping windows merged into one event with "
        "onset, offset and peak.")] = None,
    threshold: Annotated[float, typer.Option(
        help="Score an event needs, in [0, 1].")] = 0.5,
    thresholds: Annotated[Path | None, typer.Option(
        help="Per-class thresholds: JSON {\"label\": value} or CSV with columns label, "
        "threshold; other classes use --threshold.")] = None,
    rate: Annotated[int | None, typer.Option(
        min=1000, max=384000,
        help="Standard input is raw 16-bit little-endian PCM at this sample rate.")
    ] = None,
    channels: Annotated[int | None, typer.Option(
        min=1, max=256, help="Channels of raw PCM on standard input (with --rate; default 1).")
    ] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the results as JSON on stdout (notes and failures go to stderr).")
    ] = False,
    out: Annotated[Path | None, typer.Option(
        help="Also write the results as JSON to this file (replaced if it exists).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda.")] = "auto",
    backend: BackendOption = "auto",
    onnx: OnnxOption = None,
    dtype: DtypeOption = "fp32",
    quiet: Quiet = False,
    max_duration: MaxDuration = None,
) -> None:
    """Load, score every file, print tables (or JSON), list failures."""
    set_progress(not quiet)
    apply_max_duration(max_duration)
    check_threshold(threshold)
    check_dtype(dtype, [backend])
    stdin = any(str(path) == "-" for path in files)
    if stdin and len(files) > 1:
        raise FastASTError("- (standard input) cannot be mixed with files")
    if (rate is not None or channels is not None) and not stdin:
        raise FastASTError("--rate and --channels describe raw PCM on standard input (-)")
    if channels is not None and rate is None:
        raise FastASTError("--channels needs --rate (raw PCM on standard input)")
    if stdin and (as_json or out is not None):
        raise FastASTError("with - (standard input) the rows are JSON lines on stdout already; "
                           "save them with --timeline or --events instead of --json/--out")
    if plot is not None:
        image_format(plot)  # a suffix matplotlib cannot write fails now, not after scoring
    paths = [] if stdin else expand_inputs(files)
    timeline_mode = stdin or any(x is not None for x in (timeline, plot, events))
    if timeline_mode and len(paths) > 1:
        raise FastASTError("--timeline, --events and --plot take one file (or -)")
    if timeline_mode and under_torchrun():
        raise FastASTError("--timeline, --events, --plot and - score one file or stream in "
                           "order: run them without torchrun")
    check_outputs(paths, {"--timeline": timeline, "--plot": plot, "--events": events,
                          "--out": out})
    predictor = load_predictor(checkpoint, r, schedule=schedule_name(schedule),
                               proportional_attention=proportional_attention,
                               method=method_name(method), hop_s=hop,
                               window_s=window, how=how.value, batch_size=batch_size,
                               device=resolve_device(device), dtype=dtype)
    predictor.forward = make_forward(predictor.model, backend, onnx_file=onnx,
                                     batch_size=batch_size, dtype=DTYPES[dtype])
    merging = merging_of(predictor.model)
    r = merging.r if merging is not None else 0  # what ran: the checkpoint's unless --r
    notes = err_console if as_json or stdin else console
    if predictor.spec.stats_note:
        notes.print(f"note: {predictor.spec.stats_note}")
    notes.print(settings_line(predictor))
    if getattr(predictor.forward, "choice", None) is not None:
        notes.print(predictor.forward.choice.describe())
    note = capped_note(predictor.model, r)
    if note:
        notes.print(note)
    labels = predictor.labels
    if timeline_mode:
        options = TimelineOptions(timeline, plot, events, top,
                                  timeline_classes == TimelineClasses.all, threshold, thresholds)
        raw = {} if rate is None else {"rate": rate, "channels": channels or 1}
        one_timeline(predictor, None if stdin else paths[0], options, raw, notes,
                     as_json, out, checkpoint=str(checkpoint), r=r)
        return

    def report(outcome: Outcome) -> None:
        if isinstance(outcome, ClipFailure):
            err_console.print(f"[bold red]failed:[/] {outcome.reason}")
        elif not as_json:
            print_clip(console, outcome, labels, top)

    run = score_files(predictor, paths, report)
    finish_json(run, predictor, top, as_json, out, notes, checkpoint=str(checkpoint), r=r)
    if not run.scored:
        what = "the file" if len(paths) == 1 else f"any of the {len(paths)} files"
        raise FastASTError(f"could not score {what}")
    if run.failed:
        notes.print(f"{len(run.scored)} scored, {len(run.failed)} failed (listed above)")


def score_files(predictor: Predictor, paths: list[Path],
                report: Callable[[Outcome], None]) -> PredictionRun:
    """Score `paths`, reporting each outcome as it comes. Under torchrun each rank scores its
    contiguous share of the files; the outcomes of all ranks are gathered in the files' order
    and reported by the first rank alone, once all are scored."""
    ranks = current_ranks()
    if not ranks.active:
        return predict_files(predictor, paths, on_file=report)
    mine: list[Outcome] = []
    predict_files(predictor, [paths[i] for i in ranks.shard(len(paths))], on_file=mine.append)
    outcomes = ranks.gather_shards(mine)
    if ranks.is_main:
        for outcome in outcomes:
            report(outcome)
    return PredictionRun([o for o in outcomes if isinstance(o, ClipScores)],
                         [o for o in outcomes if isinstance(o, ClipFailure)])
