"""The feature recipe of an exported graph: how to rebuild its input from audio without fastast.

Written into ONNX metadata beside the normalization, so that a script with onnxruntime, numpy
and torchaudio's public `torchaudio.compliance.kaldi.fbank` reproduces `fastast predict`
(`examples/onnx_predict.py` does exactly that):

    audio → mono (mean of channels) → 16 kHz (torchaudio.functional.resample, defaults)
        → windows of `window_frames` frames every `hop_frames` frames (long files)
        → per window: its own samples, their mean subtracted → Kaldi fbank [frames, bins]
        → zero-padded at the end (or cut) to `frames` → (x - mean) / (2·std) → graph
        → logits → `score_activation` → mean over windows
"""

from __future__ import annotations

from typing import Any

from fastast_cli.data.features import FRAME_LENGTH_MS, SAMPLE_RATE, frame_length_samples
from fastast_cli.models.inputs import InputSpec

# torchaudio.compliance.kaldi.fbank arguments fastast sets (the others keep their defaults:
# remove_dc_offset=True, preemphasis_coefficient=0.97, snip_edges=True, low_freq=20,
# high_freq=0, round_to_power_of_two=True, use_log_fbank=True, use_power=True).
KALDI_ARGUMENTS = {"htk_compat": True, "use_energy": False, "dither": 0.0}
WINDOW_TYPE = "hanning"


def feature_recipe(spec: InputSpec, frames: int, frame_shift_ms: float, activation: str
                   ) -> dict[str, Any]:
    """Metadata keys (JSON values) that rebuild the input of a graph taking `frames` frames of
    `spec.num_mel_bins` bins every `frame_shift_ms` ms, and turn its logits into the scores
    `fastast predict` prints (`activation`: sigmoid or softmax)."""
    return {
        "fbank": "torchaudio.compliance.kaldi.fbank",
        "fbank_arguments": {**KALDI_ARGUMENTS, "window_type": WINDOW_TYPE,
                            "frame_length": FRAME_LENGTH_MS, "frame_shift": frame_shift_ms,
                            "num_mel_bins": spec.num_mel_bins,
                            "sample_frequency": SAMPLE_RATE},
        "window_type": WINDOW_TYPE,
        "frame_length_ms": FRAME_LENGTH_MS,
        "frame_shift_ms": frame_shift_ms,
        "mono": "mean of the channels, then resampled to sample_rate "
                "(torchaudio.functional.resample, default arguments)",
        "remove_dc": "the mean of each window's samples is subtracted before the fbank "
                     "(and Kaldi removes each frame's DC offset, remove_dc_offset=True)",
        "min_samples": frame_length_samples(),
        "padding": f"a window shorter than min_samples samples is zero-padded to them; its "
                   f"fbank is zero-padded at the end to {frames} frames (before "
                   f"normalization) or cut keeping the start",
        "score_activation": activation,
        "window_frames": frames,
        "hop_frames": max(frames // 2, 1),
        "hop_samples": int(SAMPLE_RATE * frame_shift_ms * 0.001),  # as Kaldi rounds
        "aggregate": "mean",
        "long_files": "a file of F frames (F = 1 + (samples - min_samples) // hop_samples) no "
                      "longer than window_frames is one window; else windows start every "
                      "hop_frames frames while they fit, plus one ending at the file's end if "
                      "they stop short of it; window s..s+W reads samples [hop_samples·s, "
                      "hop_samples·(s + W - 1) + min_samples); scores are averaged over windows",
    }
