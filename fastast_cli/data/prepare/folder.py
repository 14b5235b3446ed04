"""Any folder with one subfolder per class → labels CSV and stratified train/valid/test splits.

    DIR/dog/*.wav, DIR/rain/*.flac, ...   (files may sit deeper inside a class folder)
    DIR/dog_001.wav, DIR/rain_002.wav ... with a label pattern such as `(?P<label>[^_]+)_`

With a label pattern (a regular expression matched at the start of each file name, its group
`label` or else its first group naming the class), the audio files anywhere under DIR are
labelled by their names; files it does not match are counted and left out.

Class index = position in the sorted folder names; mid = `/fastast/<folder name>` (characters
other than letters, digits, `_.-` replaced by `_`). Each class's files are shuffled with
`seed` and cut by `ratios` (train, valid, test), so every split keeps the class balance.
Without `target_length`, it is sized to the 95th percentile of the clip durations (≥ 16
frames, ≤ 1024, a multiple of 8); the report says how the clip lengths fit it (`lengths`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastast_cli.data.audio import AUDIO_EXTENSIONS, not_a_file
from fastast_cli.data.features import SAMPLE_RATE, num_frames
from fastast_cli.data.prepare.conversion import Clip, converted_name, process_clips, sum_stats
from fastast_cli.data.prepare.lengths import ClipLengths, clip_seconds
from fastast_cli.data.prepare.outputs import finish, write_labels, write_split
from fastast_cli.data.prepare.workspace import PrepareReport, Workspace, written_by_prepare
from fastast_cli.data.safepath import stays_under
from fastast_cli.errors import FastASTError

SPLITS = ("train", "valid", "test")
MIN_FRAMES, MAX_FRAMES = 16, 1024


@dataclass
class ClassScan:
    """The class folders of a source tree: audio files per class, and what was left out."""

    classes: dict[str, list[Path]]
    empty: list[str]  # class folders without audio files
    escaped: list[str]  # files (relative to src) that are links out of src
    unmatched: list[str] = field(default_factory=list)  # files a label pattern left out
    unusable: list[tuple[str, str]] = field(default_factory=list)  # (name, why): not read


def class_files(src: Path, out: Path) -> ClassScan:
    """Audio files per class folder of `src` (sorted), only folders that hold audio.

    Prepare's own output is never read back as source audio, so a re-run with `out` inside
    `src` sees the same classes: files in the folders prepare writes under `out` are left out,
    and `out` itself is a class only if it holds audio of its own. Files that are links out of
    `src` are refused.
    """
    out = out.expanduser().resolve()
    scan = ClassScan({}, [], [])
    for folder in sorted(
        p for p in src.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    ):
        if written_by_prepare(out, folder):
            continue
        if not is_utf8(folder.name):
            scan.unusable.append((printable(folder.name), NOT_UTF8 + " (a class folder)"))
            continue
        files = audio_files(folder, src, out, scan)
        if files:
            scan.classes[folder.name] = files
        elif folder.resolve() != out:
            scan.empty.append(folder.name)
    if not scan.classes:
        raise FastASTError(
            f"--src {src}: expected one subfolder per class holding audio files "
            f"(e.g. {src}/dog/*.wav, {src}/rain/*.wav); found none"
        )
    return scan


def audio_files(folder: Path, src: Path, out: Path, scan: ClassScan) -> list[Path]:
    """The usable audio files anywhere under `folder` (sorted). Files that cannot be read as
    audio (FIFOs, folders, link loops, names that are not UTF-8) go to `scan.unusable` with the
    reason, links out of `src` to `scan.escaped`; prepare's own output under `out` is left out."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        why = unusable_reason(path)
        if why is not None:
            scan.unusable.append((printable(path.relative_to(src)), why))
        elif written_by_prepare(out, path):
            continue
        elif stays_under(src, path):
            files.append(path)
        else:
            scan.escaped.append(path.relative_to(src).as_posix())
    return files


NOT_UTF8 = "its name is not UTF-8 text (datafiles and labels are): rename it"


def is_utf8(name: str | Path) -> bool:
    """Whether a file name decodes as UTF-8 (Python keeps other bytes as surrogates)."""
    try:
        str(name).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(name: str | Path) -> str:
    """A name as text that can always be printed and logged (undecodable bytes as \\xNN)."""
    return os.fsencode(str(name)).decode("utf-8", "backslashreplace")


def unusable_reason(path: Path) -> str | None:
    """Why a file with an audio extension is not read (None: it is a readable regular file)."""
    return NOT_UTF8 if not is_utf8(path.name) else not_a_file(path)


def parse_ratios(ratios: tuple[float, ...]) -> tuple[float, float, float]:
    """Normalized (train, valid, test) fractions; train must be positive."""
    if len(ratios) != 3 or not all(math.isfinite(r) and r >= 0 for r in ratios) or \
            ratios[0] <= 0:
        raise FastASTError(
            f"--ratios {ratios}: expected three non-negative numbers train,valid,test "
            "with train > 0, e.g. 0.8,0.1,0.1"
        )
    total = sum(ratios)
    return ratios[0] / total, ratios[1] / total, ratios[2] / total


def stratified_split(
    files: list[Path], ratios: tuple[float, float, float], seed: int, label: str
) -> dict[str, list[Path]]:
    """Shuffle one class's files with (seed, label) and cut them by ratios (counts rounded half
    up); at least one file stays in train."""
    shuffled = list(files)
    random.Random(f"{seed}:{label}").shuffle(shuffled)
    n = len(shuffled)
    n_valid, n_test = math.floor(n * ratios[1] + 0.5), math.floor(n * ratios[2] + 0.5)
    while n_valid + n_test > n - 1 and n_valid + n_test > 0:
        if n_valid >= n_test:
            n_valid -= 1
        else:
            n_test -= 1
    return {
        "valid": shuffled[:n_valid],
        "test": shuffled[n_valid : n_valid + n_test],
        "train": shuffled[n_valid + n_test :],
    }


# A label pattern runs in a child process for at most this long over all file names: a pattern
# with catastrophic backtracking stops with a message instead of hanging prepare.
PATTERN_TIMEOUT_S = 10.0
MAX_LABEL_CHARS = 200


def compile_label_pattern(pattern: str) -> re.Pattern[str]:
    """A `--label-pattern`: valid, with a group `label` (or at least one group)."""
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as error:
        raise FastASTError(f"--label-pattern {pattern!r} is not a regular expression "
                           f"({error})") from None
    if compiled.groups == 0:
        raise FastASTError(f"--label-pattern {pattern!r} has no group to take the label from: "
                           "e.g. '(?P<label>[^_]+)_.*' labels dog_001.wav as dog")
    return compiled


def _labels_of(pattern: str, names: list[str]) -> list[str | None]:
    """The label `pattern` gives each file name (None: no match, or an unusable label)."""
    compiled = re.compile(pattern)
    group = "label" if "label" in compiled.groupindex else 1
    labels: list[str | None] = []
    for name in names:
        match = compiled.match(name)
        label = (match.group(group) or "").strip() if match else ""
        usable = label and len(label) <= MAX_LABEL_CHARS and label.isprintable()
        labels.append(label if usable and label not in (".", "..") else None)
    return labels


def match_labels(pattern: re.Pattern[str], names: list[str]) -> list[str | None]:
    """`_labels_of` in a child process, stopped after PATTERN_TIMEOUT_S."""
    context = multiprocessing.get_context("fork" if "fork" in
                                          multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(1) as pool:
        pending = pool.apply_async(_labels_of, (pattern.pattern, names))
        try:
            return pending.get(PATTERN_TIMEOUT_S)
        except multiprocessing.TimeoutError:
            pool.terminate()
            raise FastASTError(
                f"--label-pattern {pattern.pattern!r} took over {PATTERN_TIMEOUT_S:g} s on "
                f"{len(names)} file names (nested repeats backtrack without end): simplify it, "
                "e.g. '(?P<label>[^_]+)_'") from None


def pattern_files(src: Path, out: Path, pattern: re.Pattern[str]) -> ClassScan:
    """Audio files anywhere under `src` per label their name gives (see `match_labels`);
    prepare's own output under `out` and links out of `src` are left out."""
    out = out.expanduser().resolve()
    scan = ClassScan({}, [], [])
    files = audio_files(src, src, out, scan)
    for path, label in zip(files, match_labels(pattern, [p.name for p in files]), strict=True):
        if label is None:
            scan.unmatched.append(path.relative_to(src).as_posix())
        else:
            scan.classes.setdefault(label, []).append(path)
    scan.classes = dict(sorted(scan.classes.items()))
    if not scan.classes:
        example = ", ".join(p.name for p in files[:3]) or "no audio files"
        raise FastASTError(f"--label-pattern {pattern.pattern!r} labels none of the {len(files)} "
                           f"audio files under {src} (e.g. {example}); it is matched at the "
                           "start of each file name")
    return scan


def auto_target_length(seconds: list[float]) -> int:
    """Frames covering the 95th-percentile duration, a multiple of 8 in [16, 1024]."""
    if not seconds:
        return MIN_FRAMES
    frames = num_frames(int(float(np.percentile(seconds, 95)) * SAMPLE_RATE))
    return int(min(max(math.ceil(frames / 8) * 8, MIN_FRAMES), MAX_FRAMES))


def folder_mid(name: str) -> str:
    """A comma-free mid for a class folder."""
    return "/fastast/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def prepare_folder(
    src: Path,
    out: Path,
    *,
    ratios: tuple[float, ...] = (0.8, 0.1, 0.1),
    seed: int = 0,
    target_length: int | None = None,
    label_pattern: str | None = None,
) -> PrepareReport:
    """Prepare a class-per-subfolder tree (or, with `label_pattern`, files labelled by their
    names) into stratified train/valid/test datafiles."""
    src = src.expanduser()
    if not src.is_dir():
        raise FastASTError(f"--src {src} is not a folder (expected one subfolder per class)")
    src = src.resolve()
    fractions = parse_ratios(ratios)
    pattern = compile_label_pattern(label_pattern) if label_pattern is not None else None
    scan = class_files(src, Path(out)) if pattern is None else pattern_files(src, Path(out),
                                                                              pattern)
    classes = scan.classes
    all_files = [f for files in classes.values() for f in files]
    seconds = [s for s in map(clip_seconds, all_files) if s is not None]
    workspace = Workspace.open(out, "folder", target_length or auto_target_length(seconds))
    for name in scan.escaped:
        workspace.refuse(name, src)
    for name, why in scan.unusable:
        workspace.skip(name, why)
    if scan.empty:
        workspace.report.notes.append(
            f"{len(scan.empty)} class folders hold no audio and were left out: "
            + ", ".join(scan.empty)
        )
    if scan.unmatched:
        workspace.report.warnings.append(
            f"{len(scan.unmatched)} audio files do not match --label-pattern and were left out "
            f"(e.g. {', '.join(scan.unmatched[:3])})")
    loose = [f for f in src.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS]
    if loose and pattern is None:
        workspace.report.notes.append(
            f"{len(loose)} audio files directly in {src} (not in a class folder) were ignored; "
            "--label-pattern labels files by their names"
        )
    mids = _unique_mids(list(classes))
    clips: list[Clip] = []
    split_of: list[str] = []
    class_of: list[str] = []
    for label, files in classes.items():
        for split, members in stratified_split(files, fractions, seed, label).items():
            for path in sorted(members):
                clips.append(
                    Clip(
                        path, [mids[label]], converted_name(path.relative_to(src)), split == "train"
                    )
                )
                split_of.append(split)
                class_of.append(label)
    results = process_clips(clips, workspace)
    _note_small_classes(workspace, Counter(class_of[p] for p in results), list(classes))
    labels = write_labels(workspace, list(mids.values()), list(classes))
    splits = {
        name: write_split(
            workspace, name, clips, results, [i for i, s in enumerate(split_of) if s == name]
        )
        for name, fraction in zip(SPLITS, fractions, strict=True)
        if fraction > 0
    }
    mean, std = sum_stats(workspace, results, [i for i, s in enumerate(split_of) if s == "train"])
    empty = [name for name in splits if workspace.report.counts[name] == 0]
    if empty:
        workspace.report.notes.append(
            f"{', '.join(empty)}: no clip, the classes are too small for ratios "
            f"{', '.join(f'{f:.2f}' for f in fractions)} (largest class: "
            f"{max(len(files) for files in classes.values())} clips); add clips or change --ratios"
        )
    workspace.report.notes.append(
        f"split {', '.join(f'{f:.2f}' for f in fractions)} with seed {seed}; "
        f"target length {workspace.target_length} frames"
    )
    workspace.report.notes.extend(ClipLengths(tuple(seconds), workspace.target_length).lines())
    return finish(workspace, labels=labels, splits=splits, mean=mean, std=std, recipe="folder")


def _note_small_classes(workspace: Workspace, usable: Counter[str], names: list[str]) -> None:
    """Warn about classes left without a usable clip; note one-clip classes (train only)."""
    unusable = [name for name in names if usable[name] == 0]
    single = [name for name in names if usable[name] == 1]
    if unusable:
        workspace.report.warnings.append(
            f"{len(unusable)} classes have no readable clip (listed in the labels, never in a "
            f"datafile): {', '.join(unusable)}"
        )
    if single:
        workspace.report.notes.append(
            f"{len(single)} classes have a single clip (in train only, never evaluated): "
            + ", ".join(single)
        )


def _unique_mids(names: list[str]) -> dict[str, str]:
    """Mid per class name, made unique when two names slug to the same mid."""
    mids: dict[str, str] = {}
    for name in names:
        mid, n = folder_mid(name), 1
        while mid in mids.values():
            mid, n = f"{folder_mid(name)}_{n}", n + 1
        mids[name] = mid
    return mids
