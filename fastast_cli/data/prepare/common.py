"""What every `prepare` shares: converting clips, resume state, stats, datafiles, log, report.

Conversion rule: a clip that is already a mono 16-kHz WAV (PCM 16/24/32 or float) is listed in
place; anything else (another rate, stereo, 8-bit, FLAC, ...) is downmixed, resampled and
written as 16-bit WAV under `<out>/audio_16k/`. Every clip is decoded once, so unreadable,
corrupt or empty files are found, logged with their reason in `<out>/prepare.log` and left out.

Untrusted names: every name read from a dataset file (CSV column, list file) or found by
walking its folder is resolved under the dataset's root (`fastast_cli.data.safepath`); a name
that leads outside it (absolute, `..`, a symbolic link pointing elsewhere) is refused, listed in
prepare.log and left out. Converted audio is only ever written under `<out>/audio_16k/`.

Re-runs: `<out>/.fastast_state.json` remembers, per source file (path, size, mtime), where its
16-kHz WAV is and the fbank sums of its padded/cut features. A re-run with unchanged sources
reads no audio at all; datafiles, labels and manifest are cheap and always rewritten
(atomically).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastast_cli.atomic import write_json, write_text
from fastast_cli.data.audio import (
    AudioReadError,
    is_plain_wav,
    read_audio,
    resample,
    to_mono,
    write_wav,
)
from fastast_cli.data.datafile import write_datafile, write_labels_csv
from fastast_cli.data.features import NUM_MEL_BINS, SAMPLE_RATE, FbankSums, fbank, pad_or_cut
from fastast_cli.data.manifest import MANIFEST_NAME, Fold, Manifest, write_manifest
from fastast_cli.data.safepath import resolve_under
from fastast_cli.errors import FastASTError
from fastast_cli.progress import track

STATE_NAME = ".fastast_state.json"
LOG_NAME = "prepare.log"
LABELS_NAME = "class_labels_indices.csv"
STATE_VERSION = 1
OUTPUT_FOLDERS = ("audio_16k", "datafiles", "raw", "downloads", "source")  # what prepare writes
DERIVED_FOLDERS = ("audio_16k", "datafiles")  # ... of which its own results (not sources)
SAVE_EVERY_S = 30.0  # resume state is saved this often (and at the end)


@dataclass
class Clip:
    """One source clip to prepare: where it is, its label mids, its converted name."""

    source: Path
    mids: list[str]
    out_name: str  # relative path under audio_16k/ used if the clip needs converting
    needs_stats: bool = False  # in some training split: measure its fbank sums


@dataclass
class ClipResult:
    """A usable clip: the 16-kHz mono WAV to list and (for training clips) its fbank sums."""

    wav: Path
    sums: FbankSums | None


@dataclass
class PrepareReport:
    """What a `prepare` run did; the CLI prints it."""

    dataset: str
    out: Path
    manifest: Path
    counts: dict[str, int] = field(default_factory=dict)
    converted: int = 0
    in_place: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    escaped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 0.0

    @property
    def log(self) -> Path:
        """The run's log file (skipped, missing, unsafe and refused entries)."""
        return self.out / LOG_NAME


@dataclass
class Workspace:
    """An output folder being prepared: feature parameters, resume state and the report."""

    out: Path
    report: PrepareReport
    target_length: int
    num_mel_bins: int = NUM_MEL_BINS
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, out: Path, dataset: str, target_length: int) -> Workspace:
        """Open `out` (created on first write) and load its resume state, if any.

        Stored fbank sums made with other feature parameters are dropped.
        """
        out = out.expanduser().resolve()
        if out.exists() and not out.is_dir():
            raise FastASTError(f"--out {out} exists and is not a folder")
        for name in OUTPUT_FOLDERS:
            if (out / name).is_symlink():
                raise FastASTError(
                    f"--out {out}: {name} is a symbolic link; prepare writes only into real "
                    "folders under --out (remove the link or choose another --out)"
                )
        report = PrepareReport(dataset, out, out / MANIFEST_NAME)
        workspace = cls(out, report, target_length)
        workspace.state = workspace._load_state()
        return workspace

    @property
    def params(self) -> dict[str, int]:
        """Feature parameters the stored fbank sums depend on."""
        return {
            "sample_rate": SAMPLE_RATE,
            "num_mel_bins": self.num_mel_bins,
            "target_length": self.target_length,
        }

    def _load_state(self) -> dict[str, Any]:
        """The state file's clip table; sums are dropped if the parameters changed."""
        path = self.out / STATE_NAME
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        if state.get("version") != STATE_VERSION:
            return {}
        clips = state.get("clips", {})
        if state.get("params") != self.params:
            for entry in clips.values():
                entry["sums"] = None
        return clips

    def save_state(self) -> None:
        """Write the resume state atomically."""
        write_json(
            self.out / STATE_NAME,
            {"version": STATE_VERSION, "params": self.params, "clips": self.state},
            indent=None,
        )

    def skip(self, path: Path | str, reason: str) -> None:
        """Record an unusable file."""
        self.report.skipped.append((str(path), reason))

    def refuse(self, name: str, origin: Path | str) -> None:
        """Record a name (from file or folder `origin`) that leads outside its dataset folder."""
        self.report.escaped.append(f"{name}\t({origin})")

    def fail(self, message: str) -> FastASTError:
        """An error for a run that cannot finish: prepare.log is written first, and the message
        names the files left out so far (the first few; all of them in the log)."""
        write_text(self.report.log, format_log(self.report))
        left_out = [path for path, _ in self.report.skipped] + self.report.missing
        left_out += self.report.escaped
        if left_out:
            shown = ", ".join(Path(p.split("\t")[0]).name for p in left_out[:3])
            more = f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""
            message += f"; {len(left_out)} files left out ({shown}{more}; see {self.report.log})"
        return FastASTError(message)


def written_by_prepare(out: Path, path: Path) -> bool:
    """Whether `path` (links followed) lies in a folder of prepare's results under `out`: such
    files are never read back as source audio, so a re-run with `--out` inside the source is
    the same."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(out.resolve() / name) for name in DERIVED_FOLDERS)


def _signature(path: Path) -> list[int]:
    """[size, mtime_ns] of a source file."""
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def _reusable(entry: dict[str, Any] | None, signature: list[int], clip: Clip) -> bool:
    """Whether a state entry still describes this clip's finished work."""
    return (
        entry is not None
        and entry.get("sig") == signature
        and Path(entry["wav"]).exists()
        and (not clip.needs_stats or entry.get("sums") is not None)
    )


def _convert(clip: Clip, target: Path, workspace: Workspace) -> ClipResult:
    """Decode, check, downmix and resample one clip; write it to `target` unless it is a plain
    16-kHz WAV."""
    samples, rate = read_audio(clip.source)
    wave = resample(to_mono(samples), rate, SAMPLE_RATE)
    if is_plain_wav(clip.source, SAMPLE_RATE):
        wav = clip.source.resolve()
        workspace.report.in_place += 1
    else:
        wav = target
        write_wav(wav, wave, SAMPLE_RATE)
        workspace.report.converted += 1
    sums = None
    if clip.needs_stats:
        sums = FbankSums.of(
            pad_or_cut(fbank(wave, SAMPLE_RATE, workspace.num_mel_bins), workspace.target_length)
        )
    return ClipResult(wav, sums)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored after).

    Per-clip ops are tiny: on a busy machine torch's intra-op threads make them tens of
    times slower instead of faster.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def process_clips(
    clips: Sequence[Clip], workspace: Workspace, description: str = "prepare audio"
) -> dict[int, ClipResult]:
    """Prepare every clip; returns results by clip position, unusable clips left out (logged)."""
    with single_thread():
        return _process(clips, workspace, description)


def _process(
    clips: Sequence[Clip], workspace: Workspace, description: str
) -> dict[int, ClipResult]:
    """The loop of `process_clips`."""
    results: dict[int, ClipResult] = {}
    used_names: set[str] = set()
    last_save = time.monotonic()
    for position, clip in enumerate(track(clips, description)):
        clip.out_name = _unique(clip.out_name, used_names)
        target = resolve_under(workspace.out, f"audio_16k/{clip.out_name}")
        if target is None:
            workspace.refuse(clip.out_name, workspace.out / "audio_16k")
            continue
        key = str(clip.source.resolve())
        try:
            signature = _signature(clip.source)
        except OSError:
            workspace.report.missing.append(str(clip.source))
            continue
        entry = workspace.state.get(key)
        if _reusable(entry, signature, clip):
            sums = FbankSums(*entry["sums"]) if entry.get("sums") else None
            results[position] = ClipResult(Path(entry["wav"]), sums)
            workspace.report.reused += 1
            continue
        try:
            result = _convert(clip, target, workspace)
        except AudioReadError as error:
            workspace.skip(clip.source, str(error).removeprefix(f"{clip.source}: "))
            workspace.state.pop(key, None)
            continue
        results[position] = result
        sums = result.sums
        workspace.state[key] = {
            "sig": signature,
            "wav": str(result.wav),
            "sums": [sums.total, sums.total_sq, sums.count] if sums else None,
        }
        if time.monotonic() - last_save > SAVE_EVERY_S:
            workspace.save_state()
            last_save = time.monotonic()
    workspace.save_state()
    return results


def _unique(name: str, used: set[str]) -> str:
    """`name`, or `name` with a numeric suffix if another clip already took it."""
    candidate, n = name, 1
    while candidate in used:
        stem, dot, ext = name.rpartition(".")
        candidate = f"{stem}_{n}.{ext}" if dot else f"{name}_{n}"
        n += 1
    used.add(candidate)
    return candidate


def converted_name(relative: Path) -> str:
    """Name under audio_16k/ for a source at `relative` (posix, extension `.wav`)."""
    return relative.with_suffix(".wav").as_posix()


def sum_stats(
    workspace: Workspace, results: dict[int, ClipResult], positions: Iterable[int]
) -> tuple[float, float]:
    """(mean, std) of the fbank over the clips at `positions` that were prepared."""
    total = FbankSums()
    for position in positions:
        result = results.get(position)
        if result is not None and result.sums is not None:
            total = total + result.sums
    try:
        return total.mean_std()
    except ValueError:
        raise workspace.fail("no usable training clip to measure the fbank mean/std on") from None


def write_split(
    workspace: Workspace,
    name: str,
    clips: Sequence[Clip],
    results: dict[int, ClipResult],
    positions: Iterable[int],
) -> Path:
    """Write `datafiles/<name>.json` for the prepared clips at `positions`; count them."""
    rows = [(results[p].wav, clips[p].mids) for p in positions if p in results]
    path = workspace.out / "datafiles" / f"{name}.json"
    write_datafile(path, rows)
    workspace.report.counts[name] = len(rows)
    return path


def write_labels(workspace: Workspace, mids: list[str], names: list[str]) -> Path:
    """Write the labels CSV at the output root."""
    path = workspace.out / LABELS_NAME
    write_labels_csv(path, mids, names)
    return path


def finish(
    workspace: Workspace,
    *,
    labels: Path,
    splits: dict[str, Path],
    mean: float,
    std: float,
    folds: dict[int, Fold] | None = None,
    recipe: str | None = None,
    norm_measured_on: str = "train",
    extras: dict[str, Any] | None = None,
) -> PrepareReport:
    """Write manifest.yaml and prepare.log; return the completed report."""
    report = workspace.report
    report.mean, report.std = mean, std
    datafiles = [*splits.values(), *(p for f in (folds or {}).values() for p in (f.train, f.eval))]
    empty = [path.stem for path in datafiles if report.counts.get(path.stem) == 0]
    if empty:
        report.warnings.append(
            f"empty datafile(s): {', '.join(empty)}; a run that reads them has no clips "
            "to train or evaluate on"
        )
    manifest = Manifest(
        path=report.manifest,
        dataset=report.dataset,
        sample_rate=SAMPLE_RATE,
        num_mel_bins=workspace.num_mel_bins,
        target_length=workspace.target_length,
        labels_csv=labels,
        mean=mean,
        std=std,
        splits=splits,
        folds=folds or {},
        default_fold=min(folds) if folds else None,
        recipe=recipe or report.dataset,
        norm_measured_on=norm_measured_on,
        counts=report.counts,
        extras=extras or {},
        label_names=_label_names(labels),
    )
    write_manifest(manifest)
    write_text(report.log, format_log(report))
    return report


def _label_names(labels: Path) -> list[str]:
    """Display names from the labels CSV just written (for num_classes in the manifest)."""
    from fastast_cli.data.datafile import read_labels_csv

    return list(read_labels_csv(labels).names)


def format_log(report: PrepareReport) -> str:
    """The text of prepare.log: a summary, then every skipped, missing and unsafe entry."""
    lines = [
        f"# fastast prepare {report.dataset} — {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"output: {report.out}",
        f"clips: converted {report.converted}, used in place {report.in_place}, "
        f"reused from an earlier run {report.reused}",
        "counts: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()),
        f"fbank mean {report.mean:.6f}, std {report.std:.6f}",
        *(f"note: {note}" for note in report.notes),
        *(f"warning: {warning}" for warning in report.warnings),
        f"\n[skipped: unreadable, corrupt or empty audio] {len(report.skipped)}",
        *(f"{path}\t{reason}" for path, reason in report.skipped),
        f"\n[missing: listed but not found] {len(report.missing)}",
        *report.missing,
        f"\n[unsafe archive members, not extracted] {len(report.unsafe)}",
        *report.unsafe,
        f"\n[refused: names leading outside their dataset folder] {len(report.escaped)}",
        *report.escaped,
    ]
    return "\n".join(lines) + "\n"
