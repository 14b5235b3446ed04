"""Inference throughput of an AST at several merging rates, measured in one run.

Method (as ToMe's own benchmark, made robust to a shared machine): a fixed random batch, warm-up
runs per setting, the device synchronized around every timed run, and the timed runs of all
settings interleaved round by round, so that a change in machine load hits every r alike. Each
setting reports the median over its runs.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from fastast_cli.devices import autocast, resolve_device, resolve_dtype, synchronize
from fastast_cli.evaluation.flops import count_flops
from fastast_cli.models.ast import AST, NUM_PREFIX_TOKENS
from fastast_cli.models.tome import resolve_schedule, tokens_per_block


@dataclass
class ThroughputRow:
    """One merging setting: what it costs (FLOPs, tokens) and what it runs at (samples/s)."""

    r: int
    tokens: int  # tokens after the last block, CLS and DIST included
    gflops: float  # per sample
    samples_per_s: float
    speedup: float  # samples/s relative to r = 0 (or the first r) in the same run
    flop_speedup: float  # GFLOPs of the reference setting divided by this one's


@contextlib.contextmanager
def merging(model: AST, r: int, schedule: str) -> Iterator[AST]:
    """Temporarily set the model's merging rate."""
    saved = (list(model.r_schedule), getattr(model, "r_fraction", None))
    model.set_r(r, schedule, model.proportional_attention)
    try:
        yield model
    finally:
        model.r_schedule = saved[0]
        if saved[1] is not None:
            model.r_fraction = saved[1]


def time_forward(
    model: AST, batch: torch.Tensor, device: torch.device, dtype: torch.dtype
) -> float:
    """Seconds of one synchronized forward pass of `batch` [B, T, F]."""
    with torch.inference_mode(), autocast(device, dtype):
        synchronize(device)
        start = time.perf_counter()
        model(batch)
        synchronize(device)
    return time.perf_counter() - start


def final_tokens(model: AST, r: int, schedule: str) -> int:
    """Tokens left after the last block at merging rate r (from the schedule and the cap)."""
    per_block = resolve_schedule(r, model.config.depth, schedule)
    start = model.config.num_patches + NUM_PREFIX_TOKENS
    return tokens_per_block(start, per_block, NUM_PREFIX_TOKENS)[-1]


def sweep_throughput(
    model: AST,
    rs: Sequence[int],
    *,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    schedule: str = "constant",
    warmup: int = 2,
    runs: int = 5,
    seed: int = 0,
    on_step: Callable[[], None] | None = None,
) -> list[ThroughputRow]:
    """Measure samples/s and count FLOPs at each r on one random batch of the model's shape.

    Speedups are relative to the first r in `rs` (put 0 first for the usual table).
    `on_step` is called after each forward pass: there are len(rs) · (warmup + runs) of them.
    """
    return sweep_throughputs(
        [model], [rs], batch_size=batch_size, device=device, dtype=dtype, schedule=schedule,
        warmup=warmup, runs=runs, seed=seed, on_step=on_step,
    )[0]


def sweep_throughputs(
    models: Sequence[AST],
    rs: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    schedule: str = "constant",
    warmup: int = 2,
    runs: int = 5,
    seed: int = 0,
    on_step: Callable[[], None] | None = None,
) -> list[list[ThroughputRow]]:
    """`sweep_throughput` of several models (e.g. different architectures) at once: models[i]
    at the merging rates rs[i], the timed runs of every (model, r) interleaved in one loop so
    that machine load hits them all alike. Returns the rows of each model, its speedups relative
    to its own first r. `on_step` is called after each of the Σ len(rs[i]) · (warmup + runs)
    forward passes.
    """
    if len(models) != len(rs) or not all(rs):
        raise ValueError("no r values to sweep")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    models = [model.to(device).eval() for model in models]
    batches = [_random_batch(model, batch_size, seed).to(device) for model in models]
    settings = [(index, r) for index, model_rs in enumerate(rs) for r in model_rs]

    gflops = {}
    for index, r in settings:
        with merging(models[index], r, schedule):
            gflops[index, r] = count_flops(models[index], batches[index][:1]) / 1e9

    timings: dict[tuple[int, int], list[float]] = {setting: [] for setting in settings}
    for index, r in settings:
        with merging(models[index], r, schedule):
            for _ in range(warmup):
                time_forward(models[index], batches[index], device, torch_dtype)
                _tick(on_step)
    for _ in range(runs):
        for index, r in settings:
            with merging(models[index], r, schedule):
                timings[index, r].append(
                    time_forward(models[index], batches[index], device, torch_dtype))
                _tick(on_step)

    throughput = {setting: batch_size / statistics.median(timings[setting])
                  for setting in settings}
    return [
        [
            ThroughputRow(
                r=r,
                tokens=final_tokens(model, r, schedule),
                gflops=gflops[index, r],
                samples_per_s=throughput[index, r],
                speedup=throughput[index, r] / throughput[index, model_rs[0]],
                flop_speedup=gflops[index, model_rs[0]] / gflops[index, r],
            )
            for r in model_rs
        ]
        for index, (model, model_rs) in enumerate(zip(models, rs, strict=True))
    ]


def _random_batch(model: AST, batch_size: int, seed: int) -> torch.Tensor:
    """A fixed random batch [batch_size, frames, mel_bins] of the model's input shape."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch_size, config.target_length, config.num_mel_bins),
                       generator=generator)


def _tick(on_step: Callable[[], None] | None) -> None:
    if on_step is not None:
        on_step()
