"""AudioSet: datafiles for the listed clips that exist locally.

Inputs: the clips' labels from segment CSVs (`YTID, start_seconds, end_seconds, positive_labels`
after `#` comment lines) and/or from AST/PSLA JSON datafiles (`{"data": [{"wav": ..., "labels":
"/m/a,/m/b"}]}`, e.g. PSLA's enhanced balanced labels `balanced_train_data_type1_2_mean.json`,
on which AST's 0.350 mAP was trained); `class_labels_indices.csv`; and a folder of clips named by
YouTube id: `<YTID>.*`, `Y<YTID>.*` or `<YTID>_<anything>.*`, searched recursively. Every real
copy of AudioSet misses some clips: they are counted and listed in prepare.log, never an error.

A datafile's `wav` was written on another machine: only its file name counts, as a key to a
local clip (the name itself, else the YouTube id it starts with, after an optional `Y`, as in
AST's `<YTID>_<start>.flac`); the path is never opened.

Split names: `--segments NAME=CSV` / `--datafile NAME=JSON`, or from the file name (`eval` in it
→ `eval`, `unbalanced` → `unbalanced_train`, otherwise `train`); several lists with one name are
concatenated.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from fastast_cli.data.audio import AUDIO_EXTENSIONS, not_a_file
from fastast_cli.data.datafile import read_datafile_rows, read_labels_csv
from fastast_cli.data.prepare.conversion import Clip, process_clips, sum_stats
from fastast_cli.data.prepare.outputs import finish, write_labels, write_split
from fastast_cli.data.prepare.workspace import PrepareReport, Workspace, written_by_prepare
from fastast_cli.data.safepath import stays_under
from fastast_cli.errors import FastASTError

AUDIOSET_TARGET_LENGTH = 1024
YTID_LENGTH = 11
YTID = re.compile(r"[A-Za-z0-9_-]{11}")


@dataclass(frozen=True)
class Listed:
    """One clip a list names: its split, how it is shown in the log, its label mids, the list
    it comes from, and the keys (tried in order) that find it among the local clips."""

    split: str
    shown: str
    mids: list[str]
    source: Path
    keys: tuple[str, ...]


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


def datafile_keys(wav: str) -> tuple[str, ...]:
    """Keys of a datafile's `wav` among the local clips: its file name's stem, then the YouTube
    id that stem starts with (after an optional `Y`). Only the name counts, never its folders:
    `/data/audio/eval/--4gqARaEJE_0.000.flac` → (`--4gqARaEJE_0.000`, `--4gqARaEJE`)."""
    stem = PurePosixPath(PureWindowsPath(wav).name).stem  # both / and \\ end a folder name
    keys = [stem] if stem not in ("", ".", "..") else []
    for candidate in (stem, stem[1:] if stem.startswith("Y") else ""):
        head, rest = candidate[:YTID_LENGTH], candidate[YTID_LENGTH:]
        if YTID.fullmatch(head) and rest[:1] in ("", "_", "."):
            keys.append(head)
            break
    return tuple(dict.fromkeys(keys))


def read_listed(segments: list[str], datafiles: list[str]) -> list[Listed]:
    """Every clip the segment CSVs and the datafiles name, in the order given."""
    listed = [
        Listed(name, ytid, mids, path, (ytid,))
        for name, path in map(split_name, segments)
        for ytid, mids in read_segments(path.expanduser())
    ]
    for name, path in map(split_name, datafiles):
        path = path.expanduser()
        if not path.is_file():
            raise FastASTError(f"--datafile {path} does not exist (expected an AST/PSLA JSON "
                               "datafile, e.g. balanced_train_data_type1_2_mean.json)")
        for wav, mids in read_datafile_rows(path):
            keys = datafile_keys(wav)
            shown = keys[-1] if keys and keys[-1].isprintable() else ascii(wav)  # one log line
            listed.append(Listed(name, shown, list(mids), path, keys))
    return listed


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
    datafiles: list[str] | None = None,
    target_length: int = AUDIOSET_TARGET_LENGTH,
) -> PrepareReport:
    """Prepare the locally present clips that the segment CSVs and AST/PSLA `datafiles` list
    into `out`, with the labels each list gives."""
    datafiles = datafiles or []
    if not segments and not datafiles:
        raise FastASTError("pass at least one --segments CSV (e.g. balanced_train_segments.csv) "
                           "or --datafile (e.g. PSLA's balanced_train_data_type1_2_mean.json)")
    workspace = Workspace.open(out, "audioset", target_length)
    labels = read_labels_csv(labels_csv)
    root = audio_dir.expanduser().resolve()
    audio = index_audio(root, workspace)
    listed = read_listed(segments, datafiles)
    has_train = any(item.split.endswith("train") for item in listed)
    unknown = {m for item in listed for m in item.mids if m not in labels.index}
    clips: list[Clip] = []
    split_of: list[str] = []
    taken: set[tuple[str, Path]] = set()  # (split, clip): a split lists each clip once
    repeated = 0
    for item in listed:
        source = next((audio[key] for key in item.keys if key in audio), None)
        if source is None:
            workspace.report.missing.append(f"{item.shown}\t({item.source.name})")
            continue
        if (item.split, source) in taken:
            repeated += 1
            continue
        taken.add((item.split, source))
        clips.append(
            Clip(
                source,
                [m for m in item.mids if m in labels.index],
                source.relative_to(root).with_suffix(".wav").as_posix(),
                item.split.endswith("train") or not has_train,
            )
        )
        split_of.append(item.split)
    report = workspace.report
    report.notes.append(
        f"{len(report.missing)} of {len(listed)} listed clips are missing from {root}"
    )
    if repeated:
        report.notes.append(f"{repeated} entries named a clip their split already holds: "
                            "each clip is taken once per split")
    sources: dict[str, list[str]] = {}
    for item in listed:
        named = sources.setdefault(item.split, [])
        if item.source.name not in named:
            named.append(item.source.name)
    report.notes += [f"{split} labels from {', '.join(names)}" for split, names in sources.items()]
    if unknown:
        report.notes.append(
            f"{len(unknown)} label mids not in {labels_csv.name} were dropped: "
            + ", ".join(m if m.isprintable() else ascii(m) for m in sorted(unknown)[:10])
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
