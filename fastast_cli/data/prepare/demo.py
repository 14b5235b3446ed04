"""The built-in demo set: procedural sounds in ESC-50 layout, generated offline in seconds.

10 classes × 40 clips × 2 s at 16 kHz (5 folds of 8 clips per class). Every clip draws its
own pitch, timing, loudness and background-noise level, so a model has to learn the sound's
shape, not one fixed waveform. The set is then prepared exactly like ESC-50 (5 folds,
target length 200 frames ≈ 2 s).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastast_cli.atomic import write_text
from fastast_cli.data.audio import write_wav
from fastast_cli.data.features import SAMPLE_RATE
from fastast_cli.data.prepare.esc50 import prepare_fold_layout
from fastast_cli.data.prepare.workspace import PrepareReport, Workspace
from fastast_cli.progress import track

DEMO_VERSION = 1
DEMO_SECONDS = 2.0
DEMO_TARGET_LENGTH = 200
DEMO_FOLDS = 5

Sound = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def _envelope(rng: np.random.Generator, t: np.ndarray, low: float, high: float) -> np.ndarray:
    """A random-length, random-onset gate with 10-ms fades, `[samples]` in [0, 1]."""
    length = rng.uniform(low, high)
    start = rng.uniform(0, max(t[-1] - length, 0.0))
    fade = np.clip(np.minimum(t - start, start + length - t) / 0.01, 0.0, 1.0)
    return fade


def tone(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A steady sine, 300–2500 Hz."""
    return np.sin(2 * np.pi * rng.uniform(300, 2500) * t) * _envelope(rng, t, 0.8, 1.9)


def _sweep(rng: np.random.Generator, t: np.ndarray, rising: bool) -> np.ndarray:
    """An exponential sweep between ~200–800 Hz and ~2–5 kHz."""
    low, high = rng.uniform(200, 800), rng.uniform(2000, 5000)
    start, end = (low, high) if rising else (high, low)
    duration = rng.uniform(0.6, 1.8)
    onset = rng.uniform(0, t[-1] - duration)
    local = np.clip(t - onset, 0, duration)
    k = np.log(end / start) / duration
    phase = 2 * np.pi * start * (np.exp(k * local) - 1) / k
    gate = ((t >= onset) & (t <= onset + duration)).astype(float)
    return np.sin(phase) * gate


def chirp_up(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A rising sweep."""
    return _sweep(rng, t, True)


def chirp_down(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A falling sweep."""
    return _sweep(rng, t, False)


def noise_burst(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """One to three bursts of white noise, 0.15–0.6 s each."""
    out = np.zeros_like(t)
    for _ in range(rng.integers(1, 4)):
        out += rng.standard_normal(t.shape) * 0.4 * _envelope(rng, t, 0.15, 0.6)
    return out


def clicks(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A click train, 4–15 clicks per second, each a 3-ms decaying impulse."""
    out = np.zeros_like(t)
    rate = rng.uniform(4, 15)
    click = np.exp(-np.arange(int(0.003 * SAMPLE_RATE)) / 8.0) * rng.choice([-1, 1])
    for when in np.arange(rng.uniform(0, 1 / rate), t[-1], 1 / rate):
        i = int(when * SAMPLE_RATE)
        out[i : i + click.size] += click[: max(0, min(click.size, t.size - i))]
    return out


def tremolo(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A sine (300–1500 Hz) amplitude-modulated at 5–12 Hz."""
    carrier = np.sin(2 * np.pi * rng.uniform(300, 1500) * t)
    depth = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(5, 12) * t)
    return carrier * depth * _envelope(rng, t, 1.0, 1.9)


def buzz(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A sawtooth-like buzz: 12 harmonics of 80–250 Hz with 1/k amplitudes."""
    f0 = rng.uniform(80, 250)
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 13))
    return 0.5 * wave * _envelope(rng, t, 0.8, 1.9)


def dual_tone(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Two simultaneous sines, like a telephone key: 600–1000 Hz plus 1200–1700 Hz."""
    low, high = rng.uniform(600, 1000), rng.uniform(1200, 1700)
    wave = 0.5 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))
    return wave * _envelope(rng, t, 0.5, 1.6)


def beeps(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Three to six short pips (60–150 ms) of one pitch, 1–3 kHz."""
    pitch, out = rng.uniform(1000, 3000), np.zeros_like(t)
    for start in np.sort(rng.uniform(0, t[-1] - 0.15, rng.integers(3, 7))):
        gate = (t >= start) & (t < start + rng.uniform(0.06, 0.15))
        out += np.sin(2 * np.pi * pitch * t) * gate
    return np.clip(out, -1, 1)


def rumble(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Low-frequency rumble: smoothed brown noise."""
    brown = np.cumsum(rng.standard_normal(t.shape))
    brown -= np.convolve(brown, np.ones(801) / 801, mode="same")  # remove the slow drift
    brown /= np.abs(brown).max() + 1e-9
    return brown * _envelope(rng, t, 1.0, 1.9)


DEMO_CLASSES: dict[str, Sound] = {
    "tone": tone,
    "chirp_up": chirp_up,
    "chirp_down": chirp_down,
    "noise_burst": noise_burst,
    "clicks": clicks,
    "tremolo": tremolo,
    "buzz": buzz,
    "dual_tone": dual_tone,
    "beeps": beeps,
    "rumble": rumble,
}


def render_clip(
    sound: Sound, rng: np.random.Generator, seconds: float = DEMO_SECONDS
) -> np.ndarray:
    """One clip `[samples]` float32: the sound at a random level over faint white noise."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sound(rng, t)
    wave = wave / (np.abs(wave).max() + 1e-9) * 10 ** (rng.uniform(-20, -3) / 20)
    noise = rng.standard_normal(t.shape) * 10 ** (rng.uniform(-60, -40) / 20)
    return np.clip(wave + noise, -1, 1).astype(np.float32)


def generate_demo(root: Path, clips_per_class: int = 40, seed: int = 0) -> Path:
    """Write the demo set in ESC-50 layout under `root` (skipped if already there); returns root."""
    spec = {
        "version": DEMO_VERSION,
        "seed": seed,
        "clips_per_class": clips_per_class,
        "classes": list(DEMO_CLASSES),
        "seconds": DEMO_SECONDS,
    }
    marker = root / "meta" / "demo.json"
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == spec:
        return root
    rows = []
    jobs = [
        (target, name, i)
        for target, name in enumerate(DEMO_CLASSES)
        for i in range(clips_per_class)
    ]
    for target, name, i in track(jobs, "generate demo clips"):
        rng = np.random.default_rng([seed, target, i])
        fold = i % DEMO_FOLDS + 1
        filename = f"{fold}-{100000 + target * 1000 + i}-A-{target}.wav"
        write_wav(root / "audio" / filename, render_clip(DEMO_CLASSES[name], rng), SAMPLE_RATE)
        rows.append([filename, fold, target, name, "False", str(100000 + target * 1000 + i), "A"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
    writer.writerows(rows)
    write_text(root / "meta" / "esc50.csv", buffer.getvalue())
    write_text(marker, json.dumps(spec) + "\n")
    return root


def prepare_demo(
    out: Path, *, clips_per_class: int = 40, seed: int = 0, target_length: int = DEMO_TARGET_LENGTH
) -> PrepareReport:
    """Generate the demo set under `<out>/source/` and prepare it like ESC-50 into `out`."""
    workspace = Workspace.open(out, "demo", target_length)
    root = generate_demo(workspace.out / "source" / "ESC-50-demo", clips_per_class, seed)
    return prepare_fold_layout(root, workspace, mid_prefix="/m/fastdemo", recipe="demo")
