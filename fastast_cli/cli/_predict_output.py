"""What `fastast predict` prints and writes: top-k tables, the JSON results, and the timeline
mode (one file or a stream scored window by window into a CSV, events and a heat map)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
import typer
from rich.console import Console

from fastast_cli.atomic import atomic_path, write_json
from fastast_cli.cli._app import console, err_console
from fastast_cli.data.audio import AudioReadError, open_audio, open_stream, read_blocks
from fastast_cli.data.features import SAMPLE_RATE
from fastast_cli.devices import DTYPES
from fastast_cli.errors import FastASTError
from fastast_cli.inference.clips import (
    FRAMES_PER_SECOND,
    ClipScores,
    PredictionRun,
    Predictor,
    WindowRow,
    run_to_dict,
    top_k,
)
from fastast_cli.inference.stream import frames_in
from fastast_cli.inference.timeline import (
    Event,
    EventTracker,
    Nearest,
    TimelineCSV,
    load_thresholds,
    row_record,
    top_classes,
)
from fastast_cli.models.reduction.settings import merging_of
from fastast_cli.progress import task
from fastast_cli.reports.plots import plot_timeline
from fastast_cli.reports.tables import Column, rich_table
from fastast_cli.signals import signal_name

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


def settings_line(predictor: Predictor) -> str:
    """One line saying how scores are made: score function, windows and aggregation."""
    window = predictor.window / FRAMES_PER_SECOND
    hop = predictor.hop / FRAMES_PER_SECOND
    merging = merging_of(predictor.model)
    return (
        f"scores: {SCORE_NOTES[predictor.kind]}; windows of {window:g} s every {hop:g} s, "
        f"{predictor.aggregate} over windows" + (f"; {merging.describe()}" if merging else "")
        + precision_note(predictor.dtype)
    )


def precision_note(dtype: torch.dtype) -> str:
    """'' for float32 (the default), else e.g. '; fp16 autocast'."""
    name = next(name for name, value in DTYPES.items() if value == dtype)
    return "" if dtype == torch.float32 else f"; {name} autocast"


def print_clip(out: Console, clip: ClipScores, labels: list[str], k: int) -> None:
    """One file's length and window count, then a small table of its top-k labels."""
    rows = [{"rank": i + 1, **row} for i, row in enumerate(top_k(clip.scores, labels, k))]
    windows = "1 window" if clip.num_windows == 1 else f"{clip.num_windows} windows"
    out.print(f"[bold]{clip.path}[/]  {clip.duration_s:.2f} s, {windows}", highlight=False)
    out.print(rich_table("", rows, TOP_COLUMNS))


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
        except KeyboardInterrupt as stop:  # a live stream ends here; a file is left unfinished
            if source is not None:
                failure = f"{name}: interrupted ({signal_name(stop)})"
            else:
                err_console.print(f"stopped ({signal_name(stop)})")
        except BrokenPipeError:  # the reader of stdout went away (e.g. `| head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        wall = time.monotonic() - started
    speed = stream.duration_s / wall if wall > 0 else math.inf
    err_console.print(f"{stream.duration_s:.1f} s of audio in {wall:.1f} s: {speed:.1f}× real "
                      f"time, {options.scored} windows", highlight=False)
    if options.timeline is not None:
        notes.print(options.written(options.timeline), highlight=False)
    if options.events is not None:
        write_events(options, tracker.events(), name, notes, tracker.closest)
    if options.plot is not None and options.rows:
        draw_timeline(options, labels, name, notes)
    return stream.duration_s, failure


def write_events(options: TimelineOptions, events: list[Event], name: str,
                 notes: Console, closest: Nearest | None = None) -> None:
    """The events table on the console (when none: the top score and a threshold that would
    find it) and the events JSON file."""
    records = [event.to_dict() for event in events]
    if records:
        notes.print(rich_table(f"Events in {name} (score ≥ threshold)", records, EVENT_COLUMNS))
    elif closest is not None:
        notes.print(f"Events in {name}: {closest.hint()}", highlight=False, markup=False)
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
