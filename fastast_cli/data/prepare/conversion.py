"""Converting a dataset's clips: decode, check, 16-kHz mono WAV, fbank sums for the stats.

Conversion rule: a clip that is already a mono 16-kHz WAV (PCM 16/24/32 or float) is listed in
place; anything else (another rate, stereo, 8-bit, FLAC, ...) is downmixed, resampled and
written as 16-bit WAV under `<out>/audio_16k/`. Every clip is decoded once, so unreadable,
corrupt or empty files are found, logged with their reason in `<out>/prepare.log` and left out.

Untrusted names: every name read from a dataset file (CSV column, list file) or found by
walking its folder is resolved under the dataset's root (`fastast_cli.data.safepath`); a name
that leads outside it (absolute, `..`, a symbolic link pointing elsewhere) is refused, listed in
prepare.log and left out. Converted audio is only ever written under `<out>/audio_16k/`.

A re-run with unchanged sources reads no audio at all: the workspace's resume state says where
each clip's WAV is and what its fbank sums were.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastast_cli.atomic import deferred_interrupts
from fastast_cli.data.audio import (
    AudioReadError,
    is_plain_wav,
    read_audio,
    resample,
    to_mono,
    write_wav,
)
from fastast_cli.data.features import SAMPLE_RATE, FbankSums, LengthPolicy, waveform_fbank
from fastast_cli.data.prepare.workspace import Workspace
from fastast_cli.data.safepath import resolve_under
from fastast_cli.progress import track

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
        sums = FbankSums.of(waveform_fbank(
            wave, SAMPLE_RATE, length=LengthPolicy.fixed(workspace.target_length),
            num_mel_bins=workspace.num_mel_bins))
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
    try:
        _process_into(results, clips, workspace, description)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: keep what is converted for the re-run
        with deferred_interrupts():
            workspace.save_state()
        raise
    workspace.save_state()
    return results


def _process_into(results: dict[int, ClipResult], clips: Sequence[Clip], workspace: Workspace,
                  description: str) -> None:
    """Convert `clips` one by one into `results` (by position), saving the resume state now
    and then."""
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
    if total.count == 0:
        raise workspace.fail("no usable training clip to measure the fbank mean/std on")
    try:
        return total.mean_std()
    except ValueError as error:
        raise workspace.fail(str(error)) from None
