"""Device and precision choices shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib

import torch

from fastast_cli.errors import FastASTError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; an unknown name or a missing GPU is a
    user error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise FastASTError(f"--device {device!r} is not a device: use auto, cpu or cuda") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise FastASTError(f"--device {device}: CUDA is not available on this machine")
    return chosen


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is fp16 mixed precision on CUDA and fp32 elsewhere (bf16 is emulated on most CPUs)."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise FastASTError(f"unknown dtype {dtype!r}: choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for fp16/bf16; nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (timing needs it); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
