"""`fastast prepare <dataset>`: turn a dataset into AST datafiles, a labels CSV and a manifest."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fastast_cli.atomic import check_output
from fastast_cli.cli._app import (
    MaxDuration,
    Subcommands,
    app,
    apply_max_duration,
    console,
    err_console,
    user_errors,
)
from fastast_cli.data.prepare import (
    PrepareReport,
    prepare_audioset,
    prepare_demo,
    prepare_esc50,
    prepare_folder,
    prepare_speechcommands,
)
from fastast_cli.data.prepare.esc50 import ESC50_TARGET_LENGTH, ESC50_URL
from fastast_cli.data.prepare.speechcommands import (
    SPEECHCOMMANDS_TARGET_LENGTH,
    SPEECHCOMMANDS_URL,
)
from fastast_cli.errors import FastASTError
from fastast_cli.progress import set_progress

prepare_app = typer.Typer(
    help="Prepare a dataset: 16-kHz audio, AST JSON datafiles, labels CSV and manifest.yaml "
    "(the --data handle of every later command).",
    no_args_is_help=True,
    cls=Subcommands,
)
app.add_typer(prepare_app, name="prepare")

OUT_HELP = "Output folder (default: data/<dataset>); manifest.yaml is written at its root."
QUIET_HELP = "No progress (bars on a terminal, periodic lines in a log file)."
CHECKSUM_HELP = (
    "Expected 'sha256:<hex>' or 'md5:<hex>' of the archive, checked on a --download and on a "
    "local --src archive; 'none': no check. Default: the official archive's for --download, "
    "no check for a local archive."
)


def _out(out: Path | None, dataset: str) -> Path:
    """The output folder: --out or data/<dataset>, checked writable before any work."""
    folder = out if out is not None else Path("data") / dataset
    check_output(folder, folder=True)
    return folder


def _summary(report: PrepareReport) -> None:
    """Print counts, stats and what was left out of a prepare run."""
    table = Table(title=f"fastast prepare {report.dataset}", show_header=True)
    table.add_column("datafile")
    table.add_column("clips", justify="right")
    for name, count in report.counts.items():
        table.add_row(name, str(count))
    console.print(table)
    console.print(
        f"audio: {report.converted} converted to 16 kHz, {report.in_place} used in place, "
        f"{report.reused} already prepared (skipped)"
    )
    console.print(f"fbank mean {report.mean:.4f}, std {report.std:.4f} (training data)")
    for note in report.notes:
        console.print(f"note: {note}")
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    problems = [
        (len(report.skipped), "unreadable, corrupt or empty audio files skipped"),
        (len(report.missing), "listed clips missing"),
        (len(report.unsafe), "unsafe archive members not extracted"),
        (len(report.escaped), "names refused: they lead outside their dataset folder"),
    ]
    for count, what in problems:
        if count:
            err_console.print(f"[yellow]warning:[/] {count} {what} (names in {report.log})")
    console.print(f"[bold green]manifest:[/] {report.manifest}  (use --data {report.out})")


def _run(quiet: bool, max_duration: float | None = None) -> None:
    """Apply --quiet and --max-duration."""
    set_progress(not quiet)
    apply_max_duration(max_duration)


@prepare_app.command("esc50")
@user_errors
def esc50(
    src: Path = typer.Option(None, "--src", help="ESC-50-master.zip or its extracted folder."),
    out: Path = typer.Option(None, "--out", help=OUT_HELP),
    download: bool = typer.Option(False, "--download", help="Fetch the official archive first."),
    url: str = typer.Option(ESC50_URL, "--url", help="Where --download fetches from."),
    checksum: str = typer.Option(None, "--checksum", help=CHECKSUM_HELP),
    target_length: int = typer.Option(ESC50_TARGET_LENGTH, "--target-length", help="Fbank frames."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    max_duration: MaxDuration = None,
) -> None:
    """ESC-50: 5 folds (train = 4 folds, eval = 1), 44.1 kHz → 16 kHz mono."""
    _run(quiet, max_duration)
    _summary(
        prepare_esc50(
            src,
            _out(out, "esc50"),
            download=download,
            url=url,
            checksum=checksum,
            target_length=target_length,
        )
    )


@prepare_app.command("speechcommands")
@user_errors
def speechcommands(
    src: Path = typer.Option(None, "--src", help="speech_commands_v0.02.tar.gz or its folder."),
    out: Path = typer.Option(None, "--out", help=OUT_HELP),
    download: bool = typer.Option(False, "--download", help="Fetch the official archive first."),
    url: str = typer.Option(SPEECHCOMMANDS_URL, "--url", help="Where --download fetches from."),
    checksum: str = typer.Option(None, "--checksum", help=CHECKSUM_HELP),
    target_length: int = typer.Option(
        SPEECHCOMMANDS_TARGET_LENGTH, "--target-length", help="Fbank frames."
    ),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    max_duration: MaxDuration = None,
) -> None:
    """Speech Commands V2: official train/valid/test split, AST's 35 labels."""
    _run(quiet, max_duration)
    _summary(
        prepare_speechcommands(
            src,
            _out(out, "speechcommands"),
            download=download,
            url=url,
            checksum=checksum,
            target_length=target_length,
        )
    )


@prepare_app.command("audioset")
@user_errors
def audioset(
    segments: list[str] = typer.Option(
        [], "--segments", help="Segment CSV (original labels), repeatable; NAME=CSV names its "
        "split (default: eval if the file name says so, else train)."
    ),
    datafiles: list[str] = typer.Option(
        [], "--datafile", help="AST/PSLA JSON datafile, repeatable; NAME=JSON names its split. "
        "Its labels are used; each wav is found among --audio-dir's clips by its file name or "
        "YouTube id (its folders are ignored). E.g. PSLA's enhanced balanced labels, on which "
        "AST's 0.350 mAP was trained."
    ),
    labels: Path = typer.Option(..., "--labels", help="class_labels_indices.csv"),
    audio_dir: Path = typer.Option(..., "--audio-dir", help="Folder of clips named by YouTube id."),
    out: Path = typer.Option(None, "--out", help=OUT_HELP),
    target_length: int = typer.Option(1024, "--target-length", help="Fbank frames."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    max_duration: MaxDuration = None,
) -> None:
    """AudioSet: datafiles for the listed clips found locally; missing ones are counted.
    Give the clips by --segments, --datafile or both."""
    _run(quiet, max_duration)
    _summary(
        prepare_audioset(
            segments, labels, audio_dir, _out(out, "audioset"), datafiles=datafiles,
            target_length=target_length,
        )
    )


def _ratios(text: str) -> tuple[float, ...]:
    """'0.8,0.1,0.1' → (0.8, 0.1, 0.1)."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise FastASTError(f"--ratios {text!r}: expected three numbers like 0.8,0.1,0.1") from None


def source_name(src: Path) -> str:
    """The default output name of `prepare folder --src SRC`: SRC's own folder name."""
    name = src.expanduser().resolve().name
    return name if name not in ("", ".", "..") else "folder"


@prepare_app.command("folder")
@user_errors
def folder(
    src: Path = typer.Option(..., "--src", help="Folder with one subfolder of audio per class "
                             "(or audio files labelled by --label-pattern)."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: data/<name of "
                             "--src>); manifest.yaml is written at its root."),
    ratios: str = typer.Option("0.8,0.1,0.1", "--ratios", help="train,valid,test fractions."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stratified split."),
    target_length: int = typer.Option(
        None, "--target-length", help="Fbank frames (default: fits 95% of the clips)."
    ),
    label_pattern: str = typer.Option(
        None, "--label-pattern", help="Label files by their names instead of class folders: a "
        "regular expression matched at the start of each file name, the class in its group "
        "'label' (else its first group), e.g. '(?P<label>[^_]+)_.*' for dog_001.wav."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    max_duration: MaxDuration = None,
) -> None:
    """Your own data: one subfolder per class (or a file-name pattern) → stratified
    train/valid/test, with a report of the clip lengths."""
    _run(quiet, max_duration)
    _summary(
        prepare_folder(
            src, _out(out, source_name(src)), ratios=_ratios(ratios), seed=seed,
            target_length=target_length, label_pattern=label_pattern,
        )
    )


@prepare_app.command("demo")
@user_errors
def demo(
    out: Path = typer.Option(None, "--out", help=OUT_HELP),
    clips_per_class: int = typer.Option(
        40, "--clips-per-class", help="Clips of each of 10 classes."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated sounds."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
) -> None:
    """A built-in offline demo set: 10 procedural sound classes in ESC-50 layout, 5 folds."""
    _run(quiet)
    if clips_per_class < 5:
        raise FastASTError("--clips-per-class must be at least 5 (one per fold)")
    _summary(prepare_demo(_out(out, "demo"), clips_per_class=clips_per_class, seed=seed))
