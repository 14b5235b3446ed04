"""Score audio files with a fastast ONNX export, without fastast installed.

Needs onnxruntime, numpy and torch/torchaudio (for the public Kaldi fbank and resampler); WAV
files are read with Python's `wave` module (soundfile, when installed, reads other formats).
Everything else comes from the file's metadata (`fastast export --format onnx` writes it):
the fbank settings, normalization, padding rule, windows for long files and score activation.
The scores equal those of `fastast predict FILE --checkpoint CKPT` with the exported settings.

    python examples/onnx_predict.py model.onnx clip.wav [more.wav ...] [--top-k 5]

One JSON line per file: {"file", "duration_s", "windows", "top": [[label, score], ...],
"scores": {label: score}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import wave
from typing import Any

import numpy as np
import onnxruntime
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional


def read_metadata(session: onnxruntime.InferenceSession) -> dict[str, Any]:
    """The export's metadata, JSON values decoded."""
    values = {}
    for key, value in session.get_modelmeta().custom_metadata_map.items():
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return values


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """Samples [channels, n] (float32 in [-1, 1]) and the sample rate of an audio file."""
    try:
        with wave.open(path, "rb") as sound:
            width, channels, rate = sound.getsampwidth(), sound.getnchannels(), sound.getframerate()
            raw = sound.readframes(sound.getnframes())
    except (wave.Error, EOFError):  # not PCM WAV: soundfile reads the rest
        import soundfile

        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return samples.T, rate
    if width == 1:  # unsigned 8-bit
        values = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 3:  # 24-bit little-endian
        bytes3 = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        values = ((bytes3[:, 0] | bytes3[:, 1] << 8 | bytes3[:, 2] << 16) << 8 >> 8) / 2**23
    else:
        values = np.frombuffer(raw, f"<i{width}").astype(np.float32) / 2 ** (8 * width - 1)
    return values.astype(np.float32).reshape(-1, channels).T, rate


def mono_16k(samples: np.ndarray, rate: int, meta: dict[str, Any]) -> torch.Tensor:
    """The mean of the channels, resampled to the model's sample rate: [n]."""
    mono = torch.from_numpy(samples).mean(dim=0)
    if rate != meta["sample_rate"]:
        mono = torchaudio.functional.resample(mono, rate, meta["sample_rate"])
    return mono


def window_spans(num_samples: int, meta: dict[str, Any]) -> list[tuple[int, int]]:
    """Frames [start, stop) of each window (metadata `long_files`)."""
    window, hop = meta["window_frames"], meta["hop_frames"]
    frames = 0 if num_samples < meta["min_samples"] else (
        1 + (num_samples - meta["min_samples"]) // meta["hop_samples"])
    frames = max(frames, 1)
    if frames <= window:
        return [(0, frames)]
    spans = [(start, start + window) for start in range(0, frames - window + 1, hop)]
    if spans[-1][1] < frames:
        spans.append((frames - window, frames))
    return spans


def window_input(mono: torch.Tensor, span: tuple[int, int], meta: dict[str, Any]) -> np.ndarray:
    """The graph's input [frames, bins] for one window: its own samples, mean removed, Kaldi
    fbank, zero-padded or cut to `frames`, normalized."""
    start, stop = span
    first = start * meta["hop_samples"]
    wave_ = mono[first : first + (stop - start - 1) * meta["hop_samples"] + meta["min_samples"]]
    wave_ = wave_ - wave_.mean()
    if wave_.shape[0] < meta["min_samples"]:
        wave_ = torch.nn.functional.pad(wave_, (0, meta["min_samples"] - wave_.shape[0]))
    fbank = kaldi.fbank(wave_[None], **meta["fbank_arguments"])  # [frames', bins]
    frames = meta["frames"]
    fbank = torch.nn.functional.pad(fbank[:frames], (0, 0, 0, max(frames - len(fbank), 0)))
    return ((fbank - meta["mean"]) / (2 * meta["std"])).numpy()


def score_file(session: onnxruntime.InferenceSession, meta: dict[str, Any], path: str
               ) -> dict[str, Any]:
    """Scores of one file: each window through the graph, activation, mean over windows."""
    samples, rate = read_audio(path)
    mono = mono_16k(samples, rate, meta)
    spans = window_spans(mono.shape[0], meta)
    inputs = np.stack([window_input(mono, span, meta) for span in spans])
    logits = session.run(["logits"], {"fbank": inputs})[0]
    if meta["score_activation"] == "softmax":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    else:
        scores = 1 / (1 + np.exp(-logits))
    mean = scores.mean(axis=0)
    labels = meta["labels"]
    order = np.argsort(-mean, kind="stable")
    return {"file": path, "duration_s": round(samples.shape[1] / rate, 4),
            "windows": len(spans),
            "top": [[labels[i], float(mean[i])] for i in order],
            "scores": {label: float(value) for label, value in zip(labels, mean, strict=True)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", help="a .onnx file written by `fastast export --format onnx`")
    parser.add_argument("audio", nargs="+", help="audio files (WAV; others with soundfile)")
    parser.add_argument("--top-k", type=int, default=5, help="classes listed in `top`")
    args = parser.parse_args(argv)
    session = onnxruntime.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    meta = read_metadata(session)
    if "fbank_arguments" not in meta:
        sys.exit(f"{args.onnx} has no feature recipe in its metadata: export it again")
    for path in args.audio:
        result = score_file(session, meta, path)
        result["top"] = result["top"][: args.top_k]
        print(json.dumps(result))


if __name__ == "__main__":
    main()
