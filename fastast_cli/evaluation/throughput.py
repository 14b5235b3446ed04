"""Inference throughput of an AST at several merging rates, measured in one run.

Method (as ToMe's own benchmark, made robust to a shared machine): a fixed random batch, warm-up
runs per setting, the device synchronized around every timed run, and the timed runs of all
settings interleaved round by round, so that a change in machine load hits every r alike. Each
setting reports the median over its runs and their spread (max − min, % of the median): a
speed difference smaller than the spread is noise.

A native-length model (ElasticAST) can instead be timed on real clips at their own lengths
(a list of fbanks [T_i, F], packed by the model as in evaluation), where not padding pays; its
tokens and FLOPs are then the mean per clip of that batch.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

from fastast_cli.devices import autocast, resolve_device, resolve_dtype, synchronize
from fastast_cli.evaluation.flops import count_flops
from fastast_cli.inference.backends import make_forward
from fastast_cli.models.ast import NUM_PREFIX_TOKENS
from fastast_cli.models.reduction.schedule import resolve_schedule, tokens_per_block
from fastast_cli.models.reduction.settings import MergingView, merging_as, model_and_merging

# A model, or a view of one with its own merging record (a sweep's method).
Timed = nn.Module | MergingView

# Timing batches tried on an accelerator, largest first (ToMe's benchmarks use 64–256); CPU runs
# keep a small batch so that a sweep finishes in minutes.
ACCELERATOR_BATCHES = (256, 128, 64, 32, 16, 8)
CPU_BATCH = 8


def default_batch_size(
    entry: Timed, device: str | torch.device = "auto", dtype: str = "auto", r: int = 0,
    schedule: str = "constant",
) -> int:
    """The timing batch that fills the device: on CUDA the largest of `ACCELERATOR_BATCHES`
    whose forward pass at merging rate `r` (the fewest merges of the sweep: the most memory)
    fits in memory; `CPU_BATCH` elsewhere."""
    device = resolve_device(device)
    if device.type != "cuda":
        return CPU_BATCH
    torch_dtype = resolve_dtype(dtype, device)
    model = model_and_merging(entry)[0].to(device).eval()
    spec = model.input_spec()

    def fits(size: int) -> bool:
        try:
            batch = torch.zeros(size, spec.target_length, spec.num_mel_bins, device=device)
            with merging(entry, r, schedule):
                time_forward(model, batch, device, torch_dtype)
            return True
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return False

    return largest_fitting(ACCELERATOR_BATCHES, fits)


def largest_fitting(sizes: Sequence[int], fits: Callable[[int], bool]) -> int:
    """The first of `sizes` (largest first) that `fits`; the last one when none does."""
    return next((size for size in sizes if fits(size)), sizes[-1])


@dataclass
class ThroughputRow:
    """One merging setting: what it costs (FLOPs, tokens) and what it runs at (samples/s)."""

    r: int
    tokens: int  # tokens after the last block, CLS and DIST included
    gflops: float  # per sample
    samples_per_s: float
    speedup: float  # samples/s relative to r = 0 (or the first r) in the same run
    flop_speedup: float  # GFLOPs of the reference setting divided by this one's
    backend: str = "torch"  # what ran it (inference.backends; for `auto`, the one it picked)
    spread_pct: float = 0.0  # max − min of samples/s over the timed runs, % of the median


@contextlib.contextmanager
def merging(entry: Timed, r: int, schedule: str) -> Iterator[nn.Module]:
    """The model of `entry` merging at rate `r` on `schedule`, the rest of its record (a
    view's, or its own: method, options, proportional attention) kept; the model's own record
    is set back afterwards."""
    model, settings = model_and_merging(entry)
    with merging_as(model, settings.overridden(r=r, schedule=schedule)):
        yield model


def time_forward(
    model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, device: torch.device,
    dtype: torch.dtype,
) -> float:
    """Seconds of one synchronized forward pass of `batch` [B, T, F] through `model` (a model
    or a backend's forward)."""
    with torch.inference_mode(), autocast(device, dtype):
        synchronize(device)
        start = time.perf_counter()
        model(batch)
        synchronize(device)
    return time.perf_counter() - start


Batch = torch.Tensor | list[torch.Tensor]  # [B, T, F], or B clips [T_i, F] (native length)


def final_tokens(model: nn.Module, r: int, schedule: str) -> int:
    """Tokens left after the last block at merging rate r (from the schedule and the cap)."""
    per_block = resolve_schedule(r, model.config.depth, schedule)
    start = model.config.num_patches + NUM_PREFIX_TOKENS
    return tokens_per_block(start, per_block, NUM_PREFIX_TOKENS)[-1]


def batch_tokens(entry: Timed, batch: Batch, r: int, schedule: str) -> int:
    """Tokens left after the last block per sample of `batch` at merging rate r: a fixed
    input's count, or for clips at their own lengths the mean over the clips (rounded)."""
    if not isinstance(batch, list):
        return final_tokens(model_and_merging(entry)[0], r, schedule)
    with merging(entry, r, schedule) as model:
        counts = [model.token_counts(model.num_tokens(clip))[-1] for clip in batch]
    return round(sum(counts) / len(counts))


def gflops_per_sample(model: nn.Module, batch: Batch) -> float:
    """GFLOPs of one sample: the first of a fixed batch, the mean of clips of any length."""
    if not isinstance(batch, list):
        return count_flops(model, batch[:1]) / 1e9
    return count_flops(model, batch) / 1e9 / len(batch)


def sweep_throughput(
    model: Timed,
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
    backends: Sequence[str] = ("torch",),
) -> list[ThroughputRow]:
    """Measure samples/s and count FLOPs at each r on one random batch of the model's shape.

    Each r runs on each of `backends` (inference.backends: torch, compile, onnxruntime), all
    settings interleaved. Speedups are relative to the first backend at the first r in `rs`
    (put 0 first for the usual table). `on_step` is called after each forward pass: there are
    len(backends) · len(rs) · (warmup + runs) of them.
    """
    return sweep_throughputs(
        [model], [rs], batch_size=batch_size, device=device, dtype=dtype, schedule=schedule,
        warmup=warmup, runs=runs, seed=seed, on_step=on_step, backends=backends,
    )[0]


def sweep_throughputs(
    models: Sequence[Timed],
    rs: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    schedule: str | Sequence[str] = "constant",
    warmup: int = 2,
    runs: int = 5,
    seed: int = 0,
    on_step: Callable[[], None] | None = None,
    backends: Sequence[str] = ("torch",),
    inputs: Sequence[Batch | None] | None = None,
) -> list[list[ThroughputRow]]:
    """`sweep_throughput` of several models (e.g. different architectures) at once: models[i]
    at the merging rates rs[i] on each backend, the timed runs of every (model, backend, r)
    interleaved in one loop so that machine load hits them all alike (a model may come as
    several `MergingView`s, e.g. one per method: each is timed with its record, r and schedule
    set as asked). Returns the rows of each
    model (backend by backend, then r; a row names the backend that ran, the one picked for
    `auto`), its speedups relative to its own first backend at its
    first r. `schedule`: one for every model, or one per model. `on_step` is called after each
    of the Σ len(backends) · len(rs[i]) · (warmup + runs) forward passes. `inputs`: per model,
    the batch to time (e.g. real clips at their own lengths for a native-length model), None
    for a random batch of its input shape; a list of clips times batch_size = len(list).
    """
    if len(models) != len(rs) or not all(rs):
        raise ValueError("no r values to sweep")
    schedules = [schedule] * len(models) if isinstance(schedule, str) else list(schedule)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    for entry in models:
        model_and_merging(entry)[0].to(device).eval()
    given = list(inputs) if inputs is not None else [None] * len(models)
    batches = [_on(device, batch if batch is not None else _random_batch(entry, batch_size, seed))
               for entry, batch in zip(models, given, strict=True)]

    gflops = {}
    for index, entry in enumerate(models):
        for r in rs[index]:
            with merging(entry, r, schedules[index]) as model:
                gflops[index, r] = gflops_per_sample(model, batches[index])

    settings = [(index, backend, r) for index, model_rs in enumerate(rs)
                for backend in backends for r in model_rs]
    forwards = {}
    for index, backend, r in settings:
        with merging(models[index], r, schedules[index]) as model:
            forwards[index, backend, r] = make_forward(model, backend, batch_size=batch_size,
                                                       dtype=torch_dtype)
    timings: dict[tuple[int, str, int], list[float]] = {setting: [] for setting in settings}
    for setting in settings:
        for _ in range(warmup):
            time_forward(forwards[setting], batches[setting[0]], device, torch_dtype)
            _tick(on_step)
    for _ in range(runs):
        for setting in settings:
            timings[setting].append(
                time_forward(forwards[setting], batches[setting[0]], device, torch_dtype))
            _tick(on_step)

    throughput = {s: len(batches[s[0]]) / statistics.median(timings[s]) for s in settings}
    spread = {s: 100 * (len(batches[s[0]]) / min(timings[s]) - len(batches[s[0]]) / max(timings[s]))
              / throughput[s] for s in settings}
    reference = [throughput[index, backends[0], model_rs[0]] for index, model_rs in enumerate(rs)]
    return [
        [
            ThroughputRow(
                r=r,
                tokens=batch_tokens(entry, batches[index], r, schedules[index]),
                gflops=gflops[index, r],
                samples_per_s=throughput[index, backend, r],
                speedup=throughput[index, backend, r] / reference[index],
                flop_speedup=gflops[index, rs[index][0]] / gflops[index, r],
                backend=getattr(forwards[index, backend, r], "backend", backend),
                spread_pct=spread[index, backend, r],
            )
            for backend in backends for r in rs[index]
        ]
        for index, entry in enumerate(models)
    ]


def _on(device: torch.device, batch: Batch) -> Batch:
    return [clip.to(device) for clip in batch] if isinstance(batch, list) else batch.to(device)


def _random_batch(entry: Timed, batch_size: int, seed: int) -> torch.Tensor:
    """A fixed random batch [batch_size, frames, mel_bins] of the model's input shape (for a
    native-length model, its longest clip)."""
    spec = model_and_merging(entry)[0].input_spec()
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch_size, spec.target_length, spec.num_mel_bins), generator=generator)


def _tick(on_step: Callable[[], None] | None) -> None:
    if on_step is not None:
        on_step()


def architecture_key(model: Timed) -> str:
    """What decides a model's speed without merging: its architecture and its config without
    the label names. Two models with the same key run at the same samples/s at r = 0."""
    config = {f.name: getattr(model.config, f.name) for f in fields(model.config)
              if f.name != "labels"}
    return repr((model.architecture, config))


def merging_key(entry: Timed) -> str:
    """What decides a model's samples/s when it merges (r > 0): its `architecture_key` and how it
    merges (its record's token-reduction method, schedule, proportional attention)."""
    model, settings = model_and_merging(entry)
    return repr((architecture_key(model), settings.method, settings.schedule,
                 settings.proportional_attention))


def speed_key(model: Timed, r: int) -> str:
    """What decides a model's samples/s at merging rate `r`: its `merging_key`, or at r = 0,
    where every merging setting runs the same model, its `architecture_key` alone (runs of one
    architecture share their r = 0 measurement)."""
    return architecture_key(model) if r == 0 else merging_key(model)
