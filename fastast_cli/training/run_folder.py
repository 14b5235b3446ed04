"""A training run's folder: the files that make a run, the refusal to overwrite one by accident,
starting a run over (`--overwrite`) and tidying up after a crash (`--resume`).

Only files of the names in `RUN_FILES` (and the atomic writer's temporaries of them) are ever
removed or rewritten; anything else in the folder is left alone.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from fastast_cli.atomic import (
    check_output,
    json_safe,
    output_error,
    remove_stale_temporaries,
    write_json,
    write_text,
)
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.metrics import Metrics
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.resume import Progress

LOG_FIELDS = ("epoch", "train_loss", "lr", "accuracy", "mAP", "mAUC", "d_prime",
              "samples_per_s", "seconds")
RUN_FILES = ("last.pt", "best.pt", "averaged.pt", "config.yaml", "log.csv", "log.jsonl",
             "summary.json", "teacher_logits.pt", "teacher_views.pt")


def run_files(out: Path) -> list[str]:
    """Names of the run files present in `out`."""
    return [name for name in RUN_FILES if os.path.lexists(out / name)]


def check_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse before any work: an unwritable `out`, a run to overwrite without `overwrite`,
    nothing to `resume`."""
    check_output(out, folder=True)
    if resume and overwrite:
        raise FastASTError("--resume continues the run in --out, --overwrite starts it over: "
                           "give one of them")
    if resume:
        if not (out / "last.pt").is_file():
            raise FastASTError(f"nothing to resume: {out / 'last.pt'} does not exist")
        return
    present = run_files(out)
    if present and not overwrite:
        raise FastASTError(
            f"{out} already holds a run ({', '.join(present)}): continue it with --resume, "
            "start it over with --overwrite, or pick a new --out"
        )
    folders = [name for name in present if (out / name).is_dir()]
    if folders:
        raise FastASTError(f"{out}: {', '.join(folders)} is a folder, not a run file")


def clear_run_folder(out: Path) -> None:
    """Start over (`--overwrite`): remove the run files; nothing else in `out` is touched."""
    for name in RUN_FILES:
        remove_stale_temporaries(out / name)
        (out / name).unlink(missing_ok=True)


def remove_run_temporaries(out: Path) -> None:
    """Temporaries of run files left by a killed process (up to a checkpoint's size each)."""
    for name in RUN_FILES:
        remove_stale_temporaries(out / name)


def _epoch(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def trim_logs(out: Path, epochs_done: int) -> int:
    """Drop the rows of epochs beyond `epochs_done` from log.csv and log.jsonl: a process killed
    between writing an epoch's row and its `last.pt` repeats that epoch on resume. Rows that
    cannot be read are kept. Returns the number of rows dropped."""
    dropped = 0
    csv_path, jsonl_path = out / "log.csv", out / "log.jsonl"
    if csv_path.is_file():
        text = csv_path.read_text(encoding="utf-8", errors="replace")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        kept = [row for row in rows
                if (epoch := _epoch(row.get("epoch"))) is None or epoch <= epochs_done]
        removed = len(rows) - len(kept)
        if removed and reader.fieldnames:
            buffer = io.StringIO(newline="")
            writer = csv.DictWriter(buffer, fieldnames=reader.fieldnames, lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(kept)
            write_text(csv_path, buffer.getvalue())
            dropped += removed
    if jsonl_path.is_file():
        lines = jsonl_path.read_text(encoding="utf-8", errors="replace").splitlines()
        kept_lines = [line for line in lines if not _beyond(line, epochs_done)]
        if len(kept_lines) != len(lines):
            write_text(jsonl_path, "".join(line + "\n" for line in kept_lines))
            dropped += len(lines) - len(kept_lines)
    return dropped


def _beyond(line: str, epochs_done: int) -> bool:
    """Whether a log.jsonl line is the row of an epoch after `epochs_done`."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return False
    epoch = _epoch(row.get("epoch")) if isinstance(row, dict) else None
    return epoch is not None and epoch > epochs_done


def append_log_row(out: Path, row: dict[str, float]) -> None:
    """One epoch's row, appended to log.csv (header first in a new file) and log.jsonl."""
    csv_path = out / "log.csv"
    new = not csv_path.exists()
    try:
        with csv_path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
    except OSError as error:
        raise output_error(csv_path, error) from None
    try:
        with (out / "log.jsonl").open("a") as stream:
            stream.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
    except OSError as error:
        raise output_error(out / "log.jsonl", error) from None


def write_summary(out: Path, config: TrainConfig, split: str, progress: Progress,
                  averaged: Metrics | None) -> None:
    """summary.json: written once the run is complete (a finished-run marker for tools)."""
    write_json(out / "summary.json", {
        "metric": config.metric, "split": split, "best": progress.best,
        "best_epoch": progress.best_epoch, "epochs": config.epochs,
        "best_checkpoint": str(out / "best.pt"), "last": progress.history[-1],
        "averaged": averaged.summary() if averaged is not None else None,
    }, indent=2)
