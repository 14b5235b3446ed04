"""AudioSet: datafiles for the segment-list clips that exist locally.

Inputs: segment CSVs (`YTID, start_seconds, end_seconds, positive_labels` after `#` comment
lines), `class_labels_indices.csv`, and a folder of clips named by YouTube id: `<YTID>.*`,
`Y<YTID>.*` or `<YTID>_<anything>.*`, searched recursively. Every real copy of AudioSet misses
some clips: they are counted and listed in prepare.log, never an error.

Split names: `--segments NAME=CSV`, or from the file name (`eval` in it → `eval`, `unbalanced`
→ `unbalanced_train`, otherwise `train`); several CSVs with one name are concatenated.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from fastast_cli.data.audio import AUDIO_EXTENSIONS, not_a_file
from fastast_cli.data.datafile import read_labels_csv
from fastast_cli.data.prepare.conversion import Clip, process_clips, sum_stats
from fastast_cli.data.prepare.outputs import finish, write_labels, write_split
from fastast_cli.data.prepare.workspace import PrepareReport, Workspace, written_by_prepare
from fastast_cli.data.safepath import stays_under
from fastast_cli.errors import FastASTError

AUDIOSET_TARGET_LENGTH = 1024
YTID_LENGTH = 11


def split_name(spec: str) -> tuple[str, Path]:
    """`NAME=path` → (NAME, path); a bare path gets its name from the file name."""
    name, sep, path = spec.partition("=")
    if sep and re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name, Path(path)
    stem = Path(spec).stem.lower()
    guess = "eval" if "eval" in stem else "unbalanced_train" if "unbalanced" in stem else "train"
    return guess, Path(spec)


def read_segments(path: Path) -> list[tuple[str, list[str]]]:
    """(YTID, label mids) per row of a segment CSV."""
    if not path.is_file():
        raise FastASTError(
            f"--segments {path} does not exist (expected e.g. balanced_train_segments.csv)"
        )
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle, skipinitialspace=True), start=1):
            if not row or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 4:
                raise FastASTError(
                    f"{path}:{line}: expected 'YTID, start_seconds, end_seconds, positive_labels'"
                )
            mids = [m.strip() for m in ",".join(row[3:]).strip('"').split(",") if m.strip()]
            rows.append((row[0].strip(), mids))
    return rows


def index_audio(audio_dir: Path, workspace: Workspace) -> dict[str, Path]:
    """Audio files under `audio_dir` by every YTID their name may stand for; files that are
    links out of `audio_dir` are refused, prepare's own output (`--out` inside `audio_dir`) is
    left out.

    A YTID from a segment CSV is only ever a key into this index, never joined to a path.
    """
    if not audio_dir.is_dir():
        raise FastASTError(f"--audio-dir {audio_dir} is not a folder of AudioSet clips")
    exact: dict[str, Path] = {}
    loose: dict[str, Path] = {}
    for path in sorted(audio_dir.rglob("*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or path.is_dir():
            continue
        why = not_a_file(path)
        if why is not None:
            workspace.skip(path, why)
            continue
        if written_by_prepare(workspace.out, path):
            continue
        if not stays_under(audio_dir, path):
            workspace.refuse(path.relative_to(audio_dir).as_posix(), audio_dir)
            continue
        stem = path.stem
        exact.setdefault(stem, path)
        loose.setdefault(stem[:YTID_LENGTH], path)
        if stem.startswith("Y") and len(stem) > YTID_LENGTH:
            loose.setdefault(stem[1 : YTID_LENGTH + 1], path)
    return {**loose, **exact}


def prepare_audioset(
    segments: list[str],
    labels_csv: Path,
    audio_dir: Path,
    out: Path,
    *,
    target_length: int = AUDIOSET_TARGET_LENGTH,
) -> PrepareReport:
    """Prepare the locally present clips of AudioSet segment lists into `out`."""
    if not segments:
        raise FastASTError("pass at least one --segments CSV (e.g. balanced_train_segments.csv)")
    workspace = Workspace.open(out, "audioset", target_length)
    labels = read_labels_csv(labels_csv)
    root = audio_dir.expanduser().resolve()
    audio = index_audio(root, workspace)
    listed = [
        (name, ytid, mids, path)
        for name, path in map(split_name, segments)
        for ytid, mids in read_segments(path.expanduser())
    ]
    has_train = any(name.endswith("train") for name, *_ in listed)
    unknown = {m for *_, mids, _ in listed for m in mids if m not in labels.index}
    clips: list[Clip] = []
    split_of: list[str] = []
    for name, ytid, mids, path in listed:
        if ytid not in audio:
            workspace.report.missing.append(f"{ytid}\t({path.name})")
            continue
        source = audio[ytid]
        clips.append(
            Clip(
                source,
                [m for m in mids if m in labels.index],
                source.relative_to(root).with_suffix(".wav").as_posix(),
                name.endswith("train") or not has_train,
            )
        )
        split_of.append(name)
    report = workspace.report
    report.notes.append(
        f"{len(report.missing)} of {len(listed)} listed clips are missing from {root}"
    )
    if unknown:
        report.notes.append(
            f"{len(unknown)} label mids not in {labels_csv.name} were dropped: "
            + ", ".join(sorted(unknown)[:10])
        )
    if not clips:
        raise workspace.fail(
            f"none of the {len(listed)} listed clips was found in --audio-dir {root} "
            "(expected files named <YTID>.wav, Y<YTID>.wav or <YTID>_*.wav)"
        )
    results = process_clips(clips, workspace)
    labels_path = write_labels(workspace, list(labels.mids), list(labels.names))
    splits = {
        n: write_split(workspace, n, clips, results, [i for i, s in enumerate(split_of) if s == n])
        for n in dict.fromkeys(split_of)
    }
    mean, std = sum_stats(workspace, results, range(len(clips)))  # only training clips carry sums
    return finish(
        workspace,
        labels=labels_path,
        splits=splits,
        mean=mean,
        std=std,
        recipe="audioset",
        norm_measured_on="train" if has_train else "all clips (no training split given)",
    )
