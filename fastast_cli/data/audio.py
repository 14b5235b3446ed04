"""Reading audio robustly: decode, check, downmix to mono, resample; and writing 16-bit WAV.

Every way a file can be unusable (unreadable, corrupt, empty, silent NaNs, samples far beyond
full scale, a rate or length its header makes up) becomes an `AudioReadError` carrying the path
and the reason, so callers can report and skip it.

Limits, checked from the header before anything is decoded (`check_header`): a sample rate of
at least MIN_SAMPLE_RATE (a 64-KB file whose header says 1 Hz would otherwise be 9 hours of
audio to resample), a duration of at most the reading's limit (`set_max_duration`, the
commands' `--max-duration`; by default DEFAULT_MAX_DURATION_S for a file decoded whole and
DEFAULT_MAX_STREAM_S for one streamed in blocks, as `predict` reads), and for a whole decode
the memory it takes (at most half the machine's memory). Standard input is a live stream: it
has no length to check. Samples are checked as decoded: finite and within
±MAX_SAMPLE_MAGNITUDE (float files hold any value; beyond that, the fbank's power overflows).
"""

from __future__ import annotations

import errno
import math
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from fastast_cli.atomic import atomic_path
from fastast_cli.audio_limits import (  # noqa: F401 (set_max_duration: part of this API)
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_STREAM_S,
    chosen_max_duration,
    set_max_duration,
)
from fastast_cli.errors import FastASTError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64",
                    ".opus")

# WAV subtypes that every reader handles; anything else (8-bit, ADPCM, ...) gets converted.
PLAIN_WAV_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")


class AudioReadError(FastASTError):
    """An audio file that cannot be used: unreadable, corrupt, empty or not finite."""


MIN_SAMPLE_RATE = 1000  # Hz; audio is resampled to 16 kHz, whose mel bins reach 8 kHz
MAX_SAMPLE_MAGNITUDE = 1e6  # float WAVs may exceed full scale (1.0), e.g. int16-scaled floats


def max_duration(streamed: bool) -> float:
    """The longest file (seconds) a whole decode (`streamed` False) or a block read accepts."""
    chosen = chosen_max_duration()
    if chosen is not None:
        return chosen
    return DEFAULT_MAX_STREAM_S if streamed else DEFAULT_MAX_DURATION_S


def _memory_bytes() -> int:
    """This machine's physical memory (0 when it cannot be told)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def check_header(label: str, frames: int, sample_rate: int, channels: int, *,
                 streamed: bool) -> None:
    """Refuse, before decoding, audio whose header gives an unusable rate, a length beyond the
    duration limit, or (decoded whole) more memory than half the machine has."""
    if sample_rate < MIN_SAMPLE_RATE:
        raise AudioReadError(f"{label}: sample rate {sample_rate} Hz is below "
                             f"{MIN_SAMPLE_RATE} Hz (a damaged or made-up header?)")
    seconds, limit = frames / sample_rate, max_duration(streamed)
    if seconds > limit:
        raise AudioReadError(f"{label}: {_hours(seconds)} of audio is longer than the limit "
                             f"of {_hours(limit)} (raise it with --max-duration SECONDS)")
    if streamed:
        return
    # float32 samples of every channel, the mono mix and its 16-kHz resampling
    needed = 4 * frames * (channels + 1) + 4 * math.ceil(seconds * 16000)
    memory = _memory_bytes()
    if memory and needed > memory // 2:
        raise AudioReadError(f"{label}: decoding it whole takes {needed / 2**30:.1f} GiB, more "
                             f"than half this machine's memory ({memory / 2**30:.1f} GiB)")


def check_samples(block: np.ndarray, label: str) -> None:
    """Refuse decoded samples that are not finite or lie beyond ±MAX_SAMPLE_MAGNITUDE."""
    if not np.isfinite(block).all():
        raise AudioReadError(f"{label}: samples are not finite (NaN or inf)")
    if block.size and float(np.abs(block).max()) > MAX_SAMPLE_MAGNITUDE:
        raise AudioReadError(f"{label}: samples reach {float(np.abs(block).max()):.3g}, beyond "
                             f"±{MAX_SAMPLE_MAGNITUDE:g} (full scale is 1.0): not usable audio")


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode a file to float32 samples `[channels, samples]` in [-1, 1] and its sample rate.

    The header is checked first (`check_header`: rate, duration, memory), the samples after.
    """
    with open_audio(path, streamed=False) as sound:
        try:
            data = sound.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError, EOFError) as error:
            raise AudioReadError(f"{path}: cannot decode audio ({_reason(error)})") from None
        except MemoryError:
            raise AudioReadError(f"{path}: not enough memory to decode it") from None
        sample_rate = sound.samplerate
    if data.shape[0] == 0:
        raise AudioReadError(f"{path}: no audio samples (empty file)")
    check_samples(data, str(path))
    return np.ascontiguousarray(data.T), int(sample_rate)


def _reason(error: BaseException) -> str:
    """A one-line reason from a decoder exception."""
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def to_mono(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Average channels: `[channels, samples]` or `[samples]` → float32 tensor `[samples]`."""
    wave = torch.as_tensor(samples, dtype=torch.float32)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise ValueError(
            f"expected a waveform [samples] or [channels, samples], got {tuple(wave.shape)}"
        )
    return wave.mean(dim=0)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of `[..., samples]` from `orig_rate` to `new_rate` Hz."""
    if orig_rate == new_rate:
        return wave
    return AF.resample(wave, orig_rate, new_rate)


def load_mono(path: str | os.PathLike[str], sample_rate: int = 16000) -> torch.Tensor:
    """Read any supported file as a mono float32 waveform `[samples]` at `sample_rate` Hz."""
    samples, rate = read_audio(path)
    return resample(to_mono(samples), rate, sample_rate)


def is_plain_wav(path: str | os.PathLike[str], sample_rate: int = 16000) -> bool:
    """True if the file is a mono WAV at `sample_rate` in a common PCM/float subtype.

    Such files are used in place by `prepare`; any other file is converted to 16-bit WAV.
    """
    try:
        info = sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return False
    return (
        info.format in ("WAV", "WAVEX")
        and info.samplerate == sample_rate
        and info.channels == 1
        and info.subtype in PLAIN_WAV_SUBTYPES
    )


def write_wav(
    path: str | os.PathLike[str], wave: torch.Tensor | np.ndarray, sample_rate: int
) -> None:
    """Write a mono waveform `[samples]` as 16-bit PCM WAV, atomically; samples clip to [-1, 1]."""
    data = np.clip(torch.as_tensor(wave, dtype=torch.float32).numpy(), -1.0, 1.0)
    with atomic_path(Path(path)) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format="WAV")


# --- block reading: files and streams of any length in constant memory ------------------------

DEFAULT_BLOCK_SECONDS = 30.0


def open_audio(source: str | os.PathLike[str] | int | BinaryIO, *, name: str | None = None,
               rate: int | None = None, channels: int | None = None,
               streamed: bool = True) -> sf.SoundFile:
    """Open a file, a file descriptor (e.g. 0, standard input) or a binary stream for block reads.

    rate/channels: given together, the input is read as raw 16-bit little-endian PCM with that
    rate and channel count; otherwise its header says (WAV, FLAC, ...; a pipe works).
    A file's header is checked (`check_header`) for block reads, or for a whole decode when
    `streamed` is False. Raises AudioReadError naming `name` (default: the source) when it
    cannot be opened or fails a check.
    """
    label = name or str(source)
    if isinstance(source, str | os.PathLike):
        _check_regular_file(Path(source), label)
    raw = {} if rate is None else {"format": "RAW", "subtype": "PCM_16", "endian": "LITTLE",
                                   "samplerate": rate, "channels": channels or 1}
    # a path as bytes: names that are not UTF-8 open too (soundfile would encode a str strictly)
    sound = _soundfile(os.fsencode(source) if isinstance(source, str | os.PathLike) else source,
                       label, closefd=not isinstance(source, int), **raw)
    if isinstance(source, str | os.PathLike):
        try:
            check_header(label, sound.frames, sound.samplerate, sound.channels,
                         streamed=streamed)
        except AudioReadError:
            sound.close()
            raise
    elif sound.samplerate < MIN_SAMPLE_RATE:
        sound.close()
        raise AudioReadError(f"{label}: sample rate {sound.samplerate} Hz is below "
                             f"{MIN_SAMPLE_RATE} Hz (a damaged or made-up header?)")
    return sound


def not_a_file(path: Path) -> str | None:
    """Why `path` (links followed) is no audio file to open, or None for a regular file: a
    folder, a FIFO (a decoder would block on it), a device, a dangling link, a loop of links."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a loop of symbolic links"
        return "a broken symbolic link" if path.is_symlink() else "file not found"
    if stat.S_ISDIR(mode):
        return "is a folder, not an audio file"
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, socket or device)"
    return None


def _check_regular_file(path: Path, label: str) -> None:
    """Refuse a path that is not a regular file before a decoder opens it (`not_a_file`)."""
    why = not_a_file(path)
    if why is not None:
        raise AudioReadError(f"{label}: {why}")


def _soundfile(source: str | bytes | int | BinaryIO, label: str, closefd: bool,
               **options: Any) -> sf.SoundFile:
    """`sf.SoundFile` for reading, its errors as AudioReadError naming `label`."""
    try:
        return sf.SoundFile(source, closefd=closefd, **options)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, EOFError, TypeError) as error:
        raise AudioReadError(f"{label}: cannot decode audio ({_reason(error)})") from None


def read_blocks(sound: sf.SoundFile, block_frames: int, name: str = "",
                frames: int | None = None) -> Iterator[np.ndarray]:
    """Float32 blocks `[channels, ≤ block_frames]` in [-1, 1] until the end of `sound`, or
    after `frames` frames when given (the length a stream's header declared).

    Raises AudioReadError (naming `name`) for a decoder error or samples that are not finite;
    blocks already yielded stay valid.
    """
    label = name or sound.name
    left = frames
    while left is None or left > 0:
        size = block_frames if left is None else min(block_frames, left)
        try:
            block = sound.read(size, dtype="float32", always_2d=True)  # [n, channels]
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError, EOFError) as error:
            raise AudioReadError(f"{label}: cannot decode audio ({_reason(error)})") from None
        if block.shape[0] == 0:
            return
        check_samples(block, label)
        if left is not None:
            left -= block.shape[0]
        yield np.ascontiguousarray(block.T)


# --- WAV on a pipe: a header written before the length was known ----------------------------

# Data sizes a writer puts in a WAV header it cannot go back to fix (a pipe): 0, 0xFFFFFFFF
# (ffmpeg), and sox's 0x7FFFF000 ("MS_UNSPEC", rounded down to whole blocks). libsndfile takes
# them literally, so a live stream would read as empty, or stop after 2 GB (3.1 h of 48-kHz
# stereo from `sox -d`): such a size means "until the end of the stream".
UNKNOWN_WAV_SIZES = (0, 0xFFFFFFFF)
SOX_UNKNOWN_WAV_SIZE = 0x7FFFF000
MAX_WAV_HEADER_BYTES = 1 << 20  # chunks before the data (LIST, fact, ...) read at most
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
WAV_RAW_SUBTYPES = {(1, 8): "PCM_U8", (1, 16): "PCM_16", (1, 24): "PCM_24", (1, 32): "PCM_32",
                    (3, 32): "FLOAT", (3, 64): "DOUBLE"}  # (format tag, bits) → RAW subtype


@dataclass(frozen=True)
class WavLayout:
    """The samples after a WAV header: RAW subtype, rate, channels, and the frames the header
    declares (None: a placeholder size, read until the end of the stream)."""

    subtype: str
    samplerate: int
    channels: int
    frames: int | None


def read_wav_header(read: Callable[[int], bytes]) -> tuple[WavLayout | None, bytes]:
    """Read a little-endian PCM or float WAV header up to its data chunk with `read(n)`.

    Returns its layout (None for anything else: not RIFF/WAVE, another encoding, a header
    past `MAX_WAV_HEADER_BYTES`) and the bytes read, for a decoder to get them back.
    """
    consumed = [read(12)]
    if len(consumed[0]) < 12 or consumed[0][:4] != b"RIFF" or consumed[0][8:] != b"WAVE":
        return None, b"".join(consumed)
    fmt = b""
    while True:
        chunk = read(8)
        consumed.append(chunk)
        if len(chunk) < 8:
            return None, b"".join(consumed)
        kind, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        if kind == b"data":
            break
        if sum(map(len, consumed)) + size > MAX_WAV_HEADER_BYTES:
            return None, b"".join(consumed)
        body = read(size + size % 2)  # chunks are padded to an even size
        consumed.append(body)
        fmt = body if kind == b"fmt " else fmt
    head = b"".join(consumed)
    if len(fmt) < 16:
        return None, head
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")  # the sub-format GUID's first two bytes
    subtype = WAV_RAW_SUBTYPES.get((tag, bits))
    if subtype is None or channels == 0 or rate == 0 or block_align == 0:
        return None, head
    unknown = size in UNKNOWN_WAV_SIZES or size == SOX_UNKNOWN_WAV_SIZE // block_align * block_align
    return WavLayout(subtype, rate, channels, None if unknown else size // block_align), head


def open_stream(source: int | BinaryIO, name: str, rate: int | None = None,
                channels: int | None = None) -> tuple[sf.SoundFile, int | None]:
    """Open standard input (or any descriptor or binary stream) for block reads: the sound and
    the frames to read (None: until the end).

    On a pipe, a PCM or float WAV is read from its header on (`read_wav_header`), so a length
    written before it was known means "until the end"; anything else on a pipe goes to
    libsndfile with the bytes already read put back in front. Raw PCM (`rate`), files and
    in-memory streams: `open_audio`.
    """
    if rate is not None or not isinstance(source, int) or not _is_pipe(source):
        return open_audio(source, name=name, rate=rate, channels=channels), None
    layout, head = read_wav_header(partial(_read_exactly, source))
    if layout is not None and layout.samplerate < MIN_SAMPLE_RATE:
        raise AudioReadError(f"{name}: sample rate {layout.samplerate} Hz is below "
                             f"{MIN_SAMPLE_RATE} Hz (a damaged or made-up header?)")
    if layout is None:
        return _soundfile(_replay(head, source), name, closefd=True), None
    sound = _soundfile(source, name, closefd=False, format="RAW", subtype=layout.subtype,
                       endian="LITTLE", samplerate=layout.samplerate, channels=layout.channels)
    return sound, layout.frames


def _is_pipe(fd: int) -> bool:
    """Whether `fd` is a pipe or a socket (no length, no seeking)."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`, fewer only at the end of the stream."""
    parts, left = [], size
    while left > 0:
        part = os.read(fd, left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _replay(head: bytes, fd: int) -> int:
    """A pipe that gives `head`, then the rest of `fd` (copied by a thread as it comes)."""
    read_end, write_end = os.pipe()

    def copy() -> None:
        try:
            chunk = head
            while chunk:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(write_end, view):]
                chunk = os.read(fd, 1 << 16)
        except OSError:  # the decoder closed its end
            pass
        finally:
            os.close(write_end)

    threading.Thread(target=copy, daemon=True).start()
    return read_end


class StreamResampler:
    """`resample` applied block by block: the output equals resampling the whole signal at once
    (torchaudio's sinc kernel, default settings), up to float rounding.

    torchaudio reduces the rates by their gcd to `orig`→`new` and computes output group m (the
    `new` samples at m·`new`) from input samples [m·orig − width, m·orig + width + orig), zero
    outside the signal. Each call resamples the buffered input starting `context` groups before
    the first group not yet produced, and keeps only the input later groups still need.
    """

    def __init__(self, orig_rate: int, new_rate: int, lowpass_filter_width: int = 6,
                 rolloff: float = 0.99) -> None:
        self.orig_rate, self.new_rate = orig_rate, new_rate
        gcd = math.gcd(orig_rate, new_rate)
        self.orig, self.new = orig_rate // gcd, new_rate // gcd
        # torchaudio's kernel half-width (in input samples at the reduced rates)
        base = min(self.orig, self.new) * rolloff
        self.width = math.ceil(lowpass_filter_width * self.orig / base)
        self.context = math.ceil(self.width / self.orig)  # groups of input needed on the left
        self.buffer = torch.zeros(0)  # input from sample `buffer_start` on
        self.buffer_start = 0  # a multiple of `orig`
        self.next_group = 0  # first output group not yet produced

    def push(self, wave: torch.Tensor) -> torch.Tensor:
        """Feed input samples `[n]`; returns the output samples now final `[m]`."""
        if self.orig == self.new:
            return wave
        self.buffer = torch.cat([self.buffer, wave])
        available = self.buffer_start + self.buffer.shape[0]
        end_group = (available - self.width - self.orig) // self.orig + 1  # groups fully covered
        if end_group <= self.next_group:
            return wave.new_zeros(0)
        stop = (end_group - 1) * self.orig + self.width + self.orig
        return self._resample(stop, end_group)

    def finish(self) -> torch.Tensor:
        """The output samples left once the input has ended (zeros beyond it, as torchaudio)."""
        if self.orig == self.new:
            return torch.zeros(0)
        stop = self.buffer_start + self.buffer.shape[0]
        total = math.ceil(self.new * stop / self.orig)  # whole-signal output length
        if total <= self.next_group * self.new:
            return torch.zeros(0)
        return self._resample(stop, math.ceil(total / self.new), total)

    def _resample(self, stop: int, end_group: int, total: int | None = None) -> torch.Tensor:
        """Output groups [next_group, end_group) from input up to `stop`; trims the buffer."""
        first = max(self.next_group - self.context, 0) * self.orig  # a multiple of orig
        segment = self.buffer[first - self.buffer_start : stop - self.buffer_start]
        out = resample(segment, self.orig_rate, self.new_rate)
        begin = (self.next_group * self.orig - first) // self.orig * self.new
        end = (end_group * self.orig - first) // self.orig * self.new
        if total is not None:
            end = total - first // self.orig * self.new
        self.next_group = end_group
        keep = max(self.next_group - self.context, 0) * self.orig
        self.buffer = self.buffer[keep - self.buffer_start :]
        self.buffer_start = keep
        return out[begin:end]
