"""fastast: fast Audio Spectrogram Transformers (token merging, distillation, throughput).

Python API:

    from fastast_cli import build_model, load_model
    model = load_model("audioset_10_10_0.4593.pth", r=8)   # ready for eval
    logits = model(fbank)                                  # fbank [batch, frames, mel_bins]
    model.set_r(16)                                        # change merging in place

The names are imported on first use (PEP 562), so that the command line starts without torch
and a Ctrl-C during start-up exits quietly.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["AST", "ASTConfig", "__version__", "build_model", "load_model"]


def __getattr__(name: str) -> Any:
    if name in ("AST", "ASTConfig", "build_model", "load_model"):
        from fastast_cli import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
