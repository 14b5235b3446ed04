"""`fastast predict`: top labels, timelines and events of audio files and streams."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.console import Console

from fastast_cli.atomic import atomic_path, check_output, write_json
from fastast_cli.cli._app import Quiet, app, console, err_console, merging_note, user_errors
from fastast_cli.cli._backend import BackendOption, OnnxOption
from fastast_cli.cli._merging import (
    MethodOption,
    ProportionalAttentionOption,
    ScheduleOption,
    merge_r_option,
    method_name,
    schedule_name,
)
from fastast_cli.data.audio import (
    AUDIO_EXTENSIONS,
    AudioReadError,
    open_audio,
    open_stream,
    read_blocks,
)
from fastast_cli.data.features import SAMPLE_RATE
from fastast_cli.devices import resolve_device
from fastast_cli.errors import FastASTError
from fastast_cli.export.backends import make_forward
from fastast_cli.inference.clips import (
    FRAMES_PER_SECOND,
    ClipFailure,
    ClipScores,
    PredictionRun,
    Predictor,
    WindowRow,
    load_predictor,
    predict_files,
    run_to_dict,
    top_k,
)
from fastast_cli.inference.stream import frames_in
from fastast_cli.inference.timeline import (
    Event,
    EventTracker,
    TimelineCSV,
    check_threshold,
    load_thresholds,
    row_record,
    top_classes,
)
from fastast_cli.progress import set_progress, task
from fastast_cli.reports.plots import image_format, plot_timeline
from fastast_cli.reports.tables import Column, rich_table

SCORE_NOTES = {
    "softmax": "softmax over classes (checkpoint trained with cross-entropy: one label per clip)",
    "sigmoid": "sigmoid per class (multi-label; checkpoint trained with BCE or loss not recorded)",
}
TOP_COLUMNS = [Column("rank", "#"), Column("label", "label"), Column("score", "score", "{:.4f}")]


EVENT_COLUMNS = [Column("label", "label"), Column("onset_s", "onset s", "{:.2f}"),
                 Column("offset_s", "offset s", "{:.2f}"), Column("peak", "peak", "{:.4f}"),
                 Column("peak_s", "peak at s", "{:.2f}"), Column("windows", "windows")]
STDIN_BLOCK_S = 0.5  # seconds read from a stream at a time: rows come at most this late
FILE_BLOCK_S = 30.0


class Aggregate(str, Enum):
    mean = "mean"
    max = "max"


class TimelineClasses(str, Enum):
    all = "all"
    top = "top"


def settings_line(predictor: Predictor) -> str:
    """One line saying how scores are made: score function, windows and aggregation."""
    window = predictor.window / FRAMES_PER_SECOND
    hop = predictor.hop / FRAMES_PER_SECOND
    merging = getattr(predictor.model, "merge_settings", None)
    return (
        f"scores: {SCORE_NOTES[predictor.kind]}; windows of {window:g} s every {hop:g} s, "
        f"{predictor.aggregate} over windows" + (f"; {merging.describe()}" if merging else "")
    )


def print_clip(out: Console, clip: ClipScores, labels: list[str], k: int) -> None:
    """One file's length and window count, then a small table of its top-k labels."""
    rows = [{"rank": i + 1, **row} for i, row in enumerate(top_k(clip.scores, labels, k))]
    windows = "1 window" if clip.num_windows == 1 else f"{clip.num_windows} windows"
    out.print(f"[bold]{clip.path}[/]  {clip.duration_s:.2f} s, {windows}", highlight=False)
    out.print(rich_table("", rows, TOP_COLUMNS))


def expand_inputs(files: list[Path]) -> list[Path]:
    """Files as given; a folder becomes the audio files under it, sorted."""
    paths: list[Path] = []
    for path in files:
        if not path.is_dir():
            paths.append(path)
            continue
        found = sorted(p for p in path.rglob("*")
                       if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not found:
            raise FastASTError(f"{path}: a folder without audio files "
                               f"({', '.join(AUDIO_EXTENSIONS)})")
        paths.extend(found)
    return paths


def check_outputs(inputs: list[Path], outputs: dict[str, Path | None]) -> None:
    """Refuse, before any work, an output file that cannot be written or that would overwrite
    an input file or another output."""
    taken = {path.resolve(): "an input file" for path in inputs}
    for option, path in outputs.items():
        if path is None:
            continue
        if path.resolve() in taken:
            raise FastASTError(f"{option} {path} is {taken[path.resolve()]}: choose another path")
        check_output(path, folder=False, option=option)
        taken[path.resolve()] = f"also the {option} output"


def stdin_source() -> int | BinaryIO:
    """Standard input for soundfile: its file descriptor, or its buffer when it has none."""
    if sys.stdin is None or sys.stdin.isatty():
        raise FastASTError("`-` reads audio from standard input, but nothing is piped into it "
                           "(e.g. sox -d -t wav - | fastast predict - --checkpoint C)")
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdin.buffer


@dataclass
class TimelineOptions:
    """What the timeline mode writes: CSV, plot and events paths, classes per row, thresholds."""

    timeline: Path | None
    plot: Path | None
    events: Path | None
    k: int
    all_classes: bool
    threshold: float
    thresholds: Path | None
    rows: list[WindowRow] = field(default_factory=list)  # kept for files and plots
    scored: int = 0
    existing: set[Path] = field(default_factory=set)  # outputs that were there before

    def written(self, path: Path) -> str:
        """`wrote PATH`, or `replaced PATH` for a file that existed before the run."""
        return f"{'replaced' if path in self.existing else 'wrote'} {path}"


def expected_windows(predictor: Predictor, frames: int, rate: int) -> int | None:
    """Windows a file of `frames` samples at `rate` Hz will give (None when unknown)."""
    if frames <= 0 or frames >= 2**62:
        return None
    samples = math.ceil(frames * SAMPLE_RATE / rate)
    return predictor.plan.count(max(frames_in(samples), 1))


def score_timeline(predictor: Predictor, source: Path | None, options: TimelineOptions,
                   raw: dict[str, Any], notes: Console) -> tuple[float, str | None]:
    """Score one file (or stdin when `source` is None) window by window: CSV rows written and
    JSON lines printed (stdin) as they come, events tracked. Returns the audio's duration and
    the reason it ended early (None when it did not); rows kept in `options.rows`."""
    labels = predictor.labels
    options.existing = {path for path in (options.timeline, options.plot, options.events)
                        if path is not None and path.exists()}
    per_row = None if options.all_classes else options.k
    thresholds = load_thresholds(options.thresholds, options.threshold, labels)
    tracker = EventTracker(thresholds, labels)
    name = "stdin" if source is None else str(source)
    if source is None:
        sound, declared = open_stream(stdin_source(), name, **raw)
    else:
        sound, declared = open_audio(source, name=name), None
    failure = None
    with ExitStack() as stack:
        stack.enter_context(sound)
        writer = None
        if options.timeline is not None:
            tmp = stack.enter_context(atomic_path(options.timeline))
            handle = stack.enter_context(tmp.open("w", newline="", encoding="utf-8"))
            writer = TimelineCSV(handle, labels, per_row)
        block = max(int((STDIN_BLOCK_S if source is None else FILE_BLOCK_S) * sound.samplerate), 1)
        stream = predictor.stream(read_blocks(sound, block, name, declared), sound.samplerate,
                                  eager=source is None)
        total = None if source is None else expected_windows(predictor, sound.frames,
                                                              sound.samplerate)
        work = stack.enter_context(task(f"scoring {Path(name).name}", total))
        started = time.monotonic()
        try:
            for row in stream:
                if writer is not None:
                    writer.write(row)
                if source is None:
                    sys.stdout.write(json.dumps(row_record(row, labels, per_row)) + "\n")
                    sys.stdout.flush()
                tracker.add(row)
                options.scored += 1
                if source is not None or options.plot is not None:
                    options.rows.append(row)
                work.advance()
        except AudioReadError as error:
            failure = str(error)
        except KeyboardInterrupt:  # a live stream ends here; a file is left unfinished
            if source is not None:
                failure = f"{name}: interrupted"
            else:
                err_console.print("stopped (Ctrl-C)")
        except BrokenPipeError:  # the reader of stdout went away (e.g. `| head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        wall = time.monotonic() - started
    speed = stream.duration_s / wall if wall > 0 else math.inf
    err_console.print(f"{stream.duration_s:.1f} s of audio in {wall:.1f} s: {speed:.1f}× real "
                      f"time, {options.scored} windows", highlight=False)
    if options.timeline is not None:
        notes.print(options.written(options.timeline), highlight=False)
    if options.events is not None:
        write_events(options, tracker.events(), name, notes)
    if options.plot is not None and options.rows:
        draw_timeline(options, labels, name, notes)
    return stream.duration_s, failure


def write_events(options: TimelineOptions, events: list[Event], name: str,
                 notes: Console) -> None:
    """The events table on the console and the events JSON file."""
    records = [event.to_dict() for event in events]
    notes.print(rich_table(f"Events in {name} (score ≥ threshold)", records, EVENT_COLUMNS))
    assert options.events is not None
    write_json(options.events, {
        "file": name, "threshold": options.threshold,
        "thresholds_file": None if options.thresholds is None else str(options.thresholds),
        "events": records,
    }, indent=2)
    notes.print(f"{options.written(options.events)} ({len(records)} events)", highlight=False)


def draw_timeline(options: TimelineOptions, labels: list[str], name: str,
                  notes: Console) -> None:
    """The heat map of the top classes over time."""
    assert options.plot is not None
    rows = options.rows
    chosen = top_classes(rows, options.k)
    plot_timeline([row.start_s for row in rows], [row.end_s for row in rows],
                  [[float(row.scores[i]) for i in chosen] for row in rows],
                  [labels[i] for i in chosen], options.plot,
                  f"{Path(name).name}: top {len(chosen)} classes over time")
    notes.print(options.written(options.plot), highlight=False)


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
    "the JSON), 2 when none was or on a bad checkpoint or option."
)
@user_errors
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
    backend: BackendOption = "torch",
    onnx: OnnxOption = None,
    quiet: Quiet = False,
) -> None:
    """Load, score every file, print tables (or JSON), list failures."""
    set_progress(not quiet)
    check_threshold(threshold)
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
    check_outputs(paths, {"--timeline": timeline, "--plot": plot, "--events": events,
                          "--out": out})
    predictor = load_predictor(checkpoint, r, schedule=schedule_name(schedule),
                               proportional_attention=proportional_attention,
                               method=method_name(method), hop_s=hop,
                               window_s=window, how=how.value, batch_size=batch_size,
                               device=resolve_device(device))
    predictor.forward = make_forward(predictor.model, backend, onnx_file=onnx)
    merging = getattr(predictor.model, "merge_settings", None)
    r = merging.r if merging is not None else 0  # what ran: the checkpoint's unless --r
    notes = err_console if as_json or stdin else console
    if predictor.spec.stats_note:
        notes.print(f"note: {predictor.spec.stats_note}")
    notes.print(settings_line(predictor))
    note = merging_note(predictor.model, r)
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

    def report(outcome: ClipScores | ClipFailure) -> None:
        if isinstance(outcome, ClipFailure):
            err_console.print(f"[bold red]failed:[/] {outcome.reason}")
        elif not as_json:
            print_clip(console, outcome, labels, top)

    run = predict_files(predictor, paths, on_file=report)
    finish_json(run, predictor, top, as_json, out, notes, checkpoint=str(checkpoint), r=r)
    if not run.scored:
        what = "the file" if len(paths) == 1 else f"any of the {len(paths)} files"
        raise FastASTError(f"could not score {what}")
    if run.failed:
        notes.print(f"{len(run.scored)} scored, {len(run.failed)} failed (listed above)")


def one_timeline(predictor: Predictor, source: Path | None, options: TimelineOptions,
                 raw: dict[str, Any], notes: Console, as_json: bool, out: Path | None,
                 **header: Any) -> None:
    """Timeline mode: score one file (or stdin), then its top-k table and JSON (files); a
    stream that ended early or held no audio raises after everything scored was saved."""
    duration, failure = score_timeline(predictor, source, options, raw, notes)
    if source is not None and options.rows:
        clip = predictor.clip_of(str(source), duration, options.rows)
        if not as_json:
            print_clip(console, clip, predictor.labels, options.k)
        finish_json(PredictionRun([clip]), predictor, options.k, as_json, out, notes, **header)
    if failure is not None:
        raise FastASTError(f"{failure} ({options.scored} windows scored before, kept)")
    if not options.scored and source is not None:
        raise FastASTError(f"{source}: no audio samples")
    if not options.scored:
        raise FastASTError(
            "stdin: no audio samples (a WAV header written before the length was known may "
            "declare none; stream raw PCM instead, e.g. sox -d -t raw -r 16000 -c 1 -b 16 "
            "-e signed - | fastast predict - --rate 16000 --checkpoint C)")


def finish_json(run: PredictionRun, predictor: Predictor, k: int, as_json: bool,
                out: Path | None, notes: Console, **header: Any) -> None:
    """The results as JSON on stdout (--json) and in --out."""
    payload = run_to_dict(run, predictor, k, **header)
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    if out is not None:
        replaced = out.exists()
        write_json(out, payload, indent=2)
        notes.print(f"{'replaced' if replaced else 'wrote'} {out}")
