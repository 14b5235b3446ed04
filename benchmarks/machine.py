"""The machine a benchmark ran on, printed by every script in benchmarks/ under its table.

Speed ratios between backends depend on the processor (onnxruntime ran at 1.95x PyTorch on one
AMD EPYC and at 1.07x on a Zen 4 EPYC), so a table is only meaningful with its machine: the
processor model, the vector width its kernels execute (torch.backends.cpu.get_cpu_capability),
the threads, the GPU when one ran, and the versions of the libraries whose kernels ran.

    from machine import machine_line   # the scripts run as benchmarks/bench_*.py
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from fastast_cli.host_memory import freed_memory_kept
from fastast_cli.inference.backend_choice import processor_name

LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "transformers", "numpy")


def machine_facts(device: torch.device | str = "cpu") -> dict[str, str]:
    """Processor, vector width, threads (and cores), GPU, Python and library versions."""
    device = torch.device(device)
    facts = {
        "cpu": processor_name(torch.device("cpu")),
        "vector width": torch.backends.cpu.get_cpu_capability(),
        "threads": f"{torch.get_num_threads()} of {os.cpu_count()} cores",
        "malloc": "keeps freed memory" if freed_memory_kept() else "default",
    }
    if device.type == "cuda":
        facts["gpu"] = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    facts["python"] = platform.python_version()
    for name in LIBRARIES:
        try:
            facts[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return facts


def machine_line(device: torch.device | str = "cpu") -> str:
    """`machine_facts` as one line, e.g. `machine: cpu AMD EPYC 9R14; vector width AVX512; ...`."""
    return "machine: " + "; ".join(f"{key} {value}" for key, value in machine_facts(device).items())
