"""fastast: fast Audio Spectrogram Transformers (token merging, distillation, throughput).

Python API (the same models and inputs as the command line):

    from fastast_cli import features, load_model
    model = load_model("runs/kd/best.pt")          # eval mode, merging as the run trained
    x = features(waveform, sample_rate, model)     # [windows, frames, mel_bins], as predict
    logits = model(x)                              # [windows, classes]
    model.set_r(16)                                # change merging in place

The names are imported on first use (PEP 562), so that the command line starts without torch
and a Ctrl-C during start-up exits quietly.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["AST", "ASTConfig", "__version__", "build_model", "features", "load_model"]


def __getattr__(name: str) -> Any:
    if name in ("AST", "ASTConfig", "build_model", "load_model"):
        from fastast_cli import models

        return getattr(models, name)
    if name == "features":
        from fastast_cli.inference.clips import features

        return features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
