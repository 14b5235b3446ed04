"""Input shapes of the paper's three datasets, for work that needs a shape but no data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputPreset:
    """Model input of one dataset: frames (10 ms each), mel bins, and class count."""

    target_length: int
    num_classes: int
    num_mel_bins: int = 128


PRESETS: dict[str, InputPreset] = {
    "esc50": InputPreset(target_length=512, num_classes=50),
    "speechcommands": InputPreset(target_length=128, num_classes=35),
    "audioset": InputPreset(target_length=1024, num_classes=527),
}
