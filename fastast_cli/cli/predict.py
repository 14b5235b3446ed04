"""`fastast predict`: top labels of audio files of any length, rate and channel count."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fastast_cli.atomic import check_output, write_json
from fastast_cli.cli._app import app, console, err_console, merging_note, user_errors
from fastast_cli.cli._backend import BackendOption, OnnxOption
from fastast_cli.devices import resolve_device
from fastast_cli.errors import FastASTError
from fastast_cli.export.backends import make_forward
from fastast_cli.inference.clips import (
    FRAMES_PER_SECOND,
    ClipFailure,
    ClipScores,
    Predictor,
    load_predictor,
    predict_files,
    run_to_dict,
    top_k,
)
from fastast_cli.reports.tables import Column, rich_table

SCORE_NOTES = {
    "softmax": "softmax over classes (checkpoint trained with cross-entropy: one label per clip)",
    "sigmoid": "sigmoid per class (multi-label; checkpoint trained with BCE or loss not recorded)",
}
TOP_COLUMNS = [Column("rank", "#"), Column("label", "label"), Column("score", "score", "{:.4f}")]


class Aggregate(str, Enum):
    mean = "mean"
    max = "max"


def settings_line(predictor: Predictor) -> str:
    """One line saying how scores are made: score function, windows and aggregation."""
    window = predictor.spec.target_length / FRAMES_PER_SECOND
    hop = predictor.hop / FRAMES_PER_SECOND
    return (
        f"scores: {SCORE_NOTES[predictor.kind]}; windows of {window:g} s every {hop:g} s, "
        f"{predictor.aggregate} over windows"
    )


def print_clip(out: Console, clip: ClipScores, labels: list[str], k: int) -> None:
    """One file's length and window count, then a small table of its top-k labels."""
    rows = [{"rank": i + 1, **row} for i, row in enumerate(top_k(clip.scores, labels, k))]
    windows = "1 window" if clip.num_windows == 1 else f"{clip.num_windows} windows"
    out.print(f"[bold]{clip.path}[/]  {clip.duration_s:.2f} s, {windows}", highlight=False)
    out.print(rich_table("", rows, TOP_COLUMNS))


@app.command(
    help="Top labels of audio files with a trained checkpoint. Any sample rate, mono or "
    "multi-channel (channels are averaged, audio resampled to 16 kHz). A clip longer than the "
    "model's input window is scored in sliding windows whose scores are averaged (or maxed). "
    "Scores are softmax probabilities for checkpoints trained with cross-entropy, per-class "
    "sigmoids otherwise; the output says which. A file that cannot be read is reported and "
    "skipped. Exit code: 0 when at least one file was scored (failures listed on stderr and in "
    "the JSON), 2 when none was or on a bad checkpoint or option."
)
@user_errors
def predict(
    files: Annotated[list[Path], typer.Argument(
        help="Audio files (wav, flac, ogg, ...), any length, rate and channel count.")],
    checkpoint: Annotated[Path, typer.Option(
        help="fastast checkpoint (AST or CNN), original AST .pth or Hugging Face AST folder.")],
    r: Annotated[int, typer.Option("--r", min=0, help="Tokens merged per block (ToMe; ASTs).")] = 0,
    top: Annotated[int, typer.Option("--top-k", min=1, help="Labels shown per file.")] = 5,
    how: Annotated[Aggregate, typer.Option(
        "--aggregate", help="How window scores combine on long clips: mean or max.")] = (
        Aggregate.mean),
    hop: Annotated[float | None, typer.Option(
        help="Seconds between window starts on long clips (default: half a window).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the results as JSON on stdout (notes and failures go to stderr).")
    ] = False,
    out: Annotated[Path | None, typer.Option(
        help="Also write the results as JSON to this file (replaced if it exists).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda.")] = "auto",
    backend: BackendOption = "torch",
    onnx: OnnxOption = None,
) -> None:
    """Load, score every file, print tables (or JSON), list failures."""
    if out is not None:
        check_output(out, folder=False)
    predictor = load_predictor(checkpoint, r, hop_s=hop, how=how.value, batch_size=batch_size,
                               device=resolve_device(device))
    predictor.forward = make_forward(predictor.model, backend, onnx_file=onnx)
    notes = err_console if as_json else console
    if predictor.spec.stats_note:
        notes.print(f"note: {predictor.spec.stats_note}")
    notes.print(settings_line(predictor))
    note = merging_note(predictor.model, r)
    if note:
        notes.print(note)
    labels = predictor.labels

    def report(outcome: ClipScores | ClipFailure) -> None:
        if isinstance(outcome, ClipFailure):
            err_console.print(f"[bold red]failed:[/] {outcome.reason}")
        elif not as_json:
            print_clip(console, outcome, labels, top)

    run = predict_files(predictor, files, on_file=report)
    payload = run_to_dict(run, predictor, top, checkpoint=str(checkpoint), r=r)
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    if out is not None:
        replaced = out.exists()
        write_json(out, payload, indent=2)
        notes.print(f"{'replaced' if replaced else 'wrote'} {out}")
    if not run.scored:
        what = "the file" if len(files) == 1 else f"any of the {len(files)} files"
        raise FastASTError(f"could not score {what}")
    if run.failed:
        notes.print(f"{len(run.scored)} scored, {len(run.failed)} failed (listed above)")
