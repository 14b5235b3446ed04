"""The one input length a deployed model takes: an ElasticAST (clips of any length) is
deployed as the fixed AST it is on clips of a chosen length (`ElasticAST.fixed_length`, exact
up to float rounding); a fixed-length model as itself."""

from __future__ import annotations

import torch
from torch import nn

from fastast_cli.errors import FastASTError


def at_one_length(model: nn.Module, frames: int | None, resolution: float = 1.0) -> nn.Module:
    """The fixed-length model a graph or folder holds: `model` itself (frames None or its own
    length, q = 1), or a native-length model's reading of clips of `frames` frames
    (`model.fixed_length`). A FastASTError says what to choose instead."""
    spec = model.input_spec()
    if not spec.native_length:
        if frames not in (None, spec.target_length) or resolution != 1.0:
            raise FastASTError(
                f"--frames and --resolution choose the input of an ElasticAST; this model "
                f"takes {spec.target_length} frames every 10 ms (leave both out)")
        return model
    if frames is None:
        raise FastASTError(
            f"an ElasticAST takes clips of any length and an exported graph takes one: choose "
            f"it with --frames N (16 to {spec.target_length}, e.g. --frames "
            f"{spec.target_length} for {spec.target_length / 100:g} s at q = 1)")
    if not resolution > 0:
        raise FastASTError(f"--resolution must be > 0, got {resolution}")
    try:
        return model.fixed_length(frames)
    except ValueError as error:
        raise FastASTError(f"--frames {frames}: {error}") from None


def largest_gap(model: nn.Module, fixed: nn.Module, batch: int = 3, seed: int = 0) -> float:
    """Largest |logit| difference between `model` and its fixed-length `fixed` on `batch`
    random inputs [batch, frames, bins] of `fixed`'s length (a native-length `model` reads them
    as clips)."""
    spec = fixed.input_spec()
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, spec.target_length, spec.num_mel_bins, generator=generator)
    with torch.inference_mode():
        ours = model(list(inputs) if model.input_spec().native_length else inputs)
        theirs = fixed(inputs.to(next(fixed.parameters()).device))
    return float((ours.float().cpu() - theirs.float().cpu()).abs().max())
