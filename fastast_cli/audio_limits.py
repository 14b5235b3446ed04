"""How long an audio file a command reads: the defaults and the commands' `--max-duration`.

A light module (no torch), so that the command line can describe and set the limit without
loading the audio stack; `data.audio` checks every file's header against it before decoding.
"""

from __future__ import annotations

DEFAULT_MAX_DURATION_S = 4 * 3600.0  # a file decoded whole (datasets, prepare, visualize)
DEFAULT_MAX_STREAM_S = 24 * 3600.0  # a file read in blocks (predict, timelines)
_max_duration_s: float | None = None  # set_max_duration: one limit for both kinds of reads


def set_max_duration(seconds: float | None) -> None:
    """Set the longest audio file this process reads (None: the defaults above); the
    commands' `--max-duration`."""
    global _max_duration_s
    _max_duration_s = seconds


def chosen_max_duration() -> float | None:
    """The limit `set_max_duration` set (None: the defaults apply)."""
    return _max_duration_s
