"""Device and precision choices shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib
import platform

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


def dtype_name(dtype: str, device: torch.device) -> str:
    """The precision `dtype` names on `device` (`auto` resolved), as recorded with results."""
    chosen = resolve_dtype(dtype, device)
    return next(name for name, value in DTYPES.items() if value == chosen)


def device_label(device: torch.device) -> str:
    """The device and what it is, for a timing's record: `cuda:0 (NVIDIA H100 80GB HBM3)`,
    `cpu (AMD EPYC 9654 96-Core Processor)` (the processor decides CPU speed)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    name = cpu_model_name()
    return f"{device.type} ({name})" if name else device.type


def cpu_model_name() -> str:
    """The processor's model name (Linux /proc/cpuinfo, else the platform's), '' if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.lower().startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for fp16/bf16; nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (timing needs it); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
