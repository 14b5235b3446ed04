"""fastast: fast Audio Spectrogram Transformers (token merging, distillation, throughput).

Python API:

    from fastast_cli import build_model, load_model
    model = load_model("audioset_10_10_0.4593.pth", r=8)   # ready for eval
    logits = model(fbank)                                  # fbank [batch, frames, mel_bins]
    model.set_r(16)                                        # change merging in place
"""

from fastast_cli.models import AST, ASTConfig, build_model, load_model

__version__ = "0.1.0"

__all__ = ["AST", "ASTConfig", "__version__", "build_model", "load_model"]
