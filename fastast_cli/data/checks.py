"""Checks of a datafile's clips made when a run starts, so that a problem is reported at once
and whole, not as a traceback in the middle of an epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastast_cli.data.datafile import Entry, read_datafile
from fastast_cli.errors import FastASTError

if TYPE_CHECKING:
    from fastast_cli.data.manifest import Manifest

SHOWN = 3  # names listed in a message; the rest are counted


def _some(names: Sequence[str]) -> str:
    more = f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def check_labelled(entries: Sequence[Entry], datafile: Path) -> None:
    """Every clip needs at least one label: a blank one would be scored as "no class", and its
    argmax as class 0. Clips of "no event" need a class of their own in the labels CSV."""
    blank = [str(entry.wav.name) for entry in entries if not entry.labels]
    if blank:
        raise FastASTError(
            f"{datafile}: {len(blank)} of {len(entries)} clips have no labels ({_some(blank)}); "
            "every clip needs one (give 'no event' clips a class of their own)"
        )


def check_clips(entries: Sequence[Entry], datafile: Path, split: str, use: str = "") -> None:
    """The split has clips, and every audio file it lists exists (one stat per file). `use`
    says what the split is needed for, in the message about an empty one."""
    if not entries:
        raise FastASTError(f"the {split} split is empty: {datafile} lists no clips"
                           + (f" ({use})" if use else ""))
    missing = [str(entry.wav) for entry in entries if not os.path.isfile(entry.wav)]
    if missing:
        raise FastASTError(
            f"{len(missing)} of {len(entries)} audio files listed in {datafile} ({split} split) "
            f"are missing: {_some(missing)}"
        )


def check_datafile(datafile: Path, split: str) -> None:
    """`check_clips` and `check_labelled` of the clips `datafile` lists, read from disk: for
    work that comes before a dataset is loaded (a sweep's timing, the later folds of
    `evaluate --folds`)."""
    entries = read_datafile(datafile)
    check_clips(entries, datafile, split)
    check_labelled(entries, datafile)


def check_disjoint(train: Sequence[Entry], train_file: Path, held_out: Sequence[Entry],
                   held_out_file: Path, split: str) -> None:
    """No clip of a held-out split may also be a training clip: its scores would be leaked."""
    training = {entry.wav for entry in train}
    shared = [str(entry.wav) for entry in held_out if entry.wav in training]
    if shared:
        raise FastASTError(
            f"{len(shared)} clips of the {split} split ({held_out_file}) are also training clips "
            f"({train_file}): {_some(shared)}; a held-out split must not share clips with train"
        )


def check_held_out(manifest: Manifest, fold: int | None, train: Sequence[Entry]) -> None:
    """`check_disjoint` of the training clips and the splits that select and report a model
    (the fold's eval split in a cross-validation dataset)."""
    train_file = manifest.datafile("train", fold)
    for split in dict.fromkeys((manifest.selection_split, manifest.eval_split)):
        datafile = manifest.datafile(split, fold)
        check_disjoint(train, train_file, read_datafile(datafile), datafile, split)
