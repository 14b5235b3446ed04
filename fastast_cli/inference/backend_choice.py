"""`--backend auto`: the fastest inference backend for this machine, model, shape and merging.

Which backend wins depends on the processor (onnxruntime's own GEMM kernels ran at 1.95x
PyTorch on one 2-core AMD EPYC and at 1.07x on a Zen 4 EPYC), so it is measured, not assumed:
every available candidate runs a few batches of the real input shape, interleaved with `torch`
round by round, and a candidate replaces `torch` only when it is faster by more than the noise
of the measurement. A candidate that fails to load or run is dropped, and so is
`onnxruntime-int8` when its export's top-1 agreement with the model (on synthetic audio
features, export.quantize) is below 99 %. The decision is cached (one JSON file in the user's
cache folder, written atomically; an unreadable file is ignored) under a key of everything it
depends on: processor, vector width, threads, library versions, model digest, input shape,
merging settings, device, dtype and the candidates measured (so fp32 and int8). With `torch`
the only candidate nothing is measured.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastast_cli import __version__
from fastast_cli.atomic import atomic_path
from fastast_cli.devices import autocast, resolve_dtype, synchronize
from fastast_cli.distributed import current_ranks
from fastast_cli.errors import FastASTError
from fastast_cli.export.quantize import MIN_AGREEMENT
from fastast_cli.host_memory import freed_memory_kept
from fastast_cli.inference.clips import input_spec
from fastast_cli.models.reduction import DEFAULT_METHOD
from fastast_cli.progress import progress_bar

Forward = Callable[[torch.Tensor], torch.Tensor]
REFERENCE = "torch"
# Candidates `auto` measures against torch by default. `compile` is left out: its first call
# compiles for about a minute per r and batch shape, which a short measurement cannot pay back
# (ask for it with --backend compile, or add it in $FASTAST_AUTO_BACKENDS).
AUTO_CANDIDATES = ("onnxruntime", "onnxruntime-int8")
ONNX_CANDIDATES = ("onnxruntime", "onnxruntime-int8")  # run their fp32 or int8 export: fp32 only
AUTO_ENV = "FASTAST_AUTO_BACKENDS"
MIN_GAIN = 0.05  # a candidate must beat torch by at least 5 % (and by more than the noise)
WARMUP = 1  # untimed calls per backend
ROUNDS = 3  # timed calls per backend, interleaved
CHOICE_FILE = "backend-choice.json"
CPU_MEASURE_BATCH = 8  # on a CPU samples/s is flat from here on; larger batches only take longer


@dataclass(frozen=True)
class ChoiceKey:
    """Everything the fastest backend depends on; `digest` names the cache entry."""

    processor: str  # CPU model name, or the GPU's name on CUDA
    vector_width: str  # torch.backends.cpu.get_cpu_capability(): the ISA kernels execute
    threads: int
    versions: dict[str, str]  # fastast, torch, onnxruntime
    model: str  # digest of weights, architecture and merging settings (inference.backends)
    shape: tuple[int, ...]  # the measured batch [B, T, F]
    device: str
    dtype: str
    candidates: tuple[str, ...] = ()  # the backends measured against torch (int8 among them)
    host_memory: str = "default"  # "kept" under fastast_cli.host_memory (faster torch on CPU)

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class BackendChoice:
    """The backend `auto` picked, the samples/s it measured per backend (empty when nothing
    was measured) and why."""

    backend: str
    samples_per_s: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    cached: bool = False

    def describe(self) -> str:
        """One line for the user: what runs and on what evidence."""
        return f"backend: {self.backend} (auto: {self.reason}{', cached' if self.cached else ''})"


def processor_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU model from /proc/cpuinfo (platform's otherwise)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose kernels run the model (absent ones left out)."""
    versions = {"fastast": __version__, "torch": torch.__version__}
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def available_candidates() -> list[str]:
    """The backends `auto` measures against torch: $FASTAST_AUTO_BACKENDS (a comma list, empty
    for torch alone) else `AUTO_CANDIDATES`, less those that cannot run here (onnxruntime
    needs the export extra)."""
    from fastast_cli.inference.backends import BACKENDS

    spec = os.environ.get(AUTO_ENV)
    names = AUTO_CANDIDATES if spec is None else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [name for name in names if name not in BACKENDS or name == "auto"]
    if unknown:
        raise FastASTError(f"${AUTO_ENV} names {', '.join(unknown)}: use backends among "
                           f"{', '.join(name for name in BACKENDS if name != 'auto')}")
    return [name for name in names if name != REFERENCE and _installed(name)]


def _installed(backend: str) -> bool:
    if backend not in ONNX_CANDIDATES:
        return True
    try:
        import onnxruntime  # noqa: F401
        if backend == "onnxruntime-int8":
            import onnxruntime.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def choice_key(model: nn.Module, shape: Sequence[int], device: torch.device,
               dtype: torch.dtype, method: str, candidates: Sequence[str] = ()) -> ChoiceKey:
    """The cache key of `model` (at its current merging settings) run on batches of `shape`,
    choosing among torch and `candidates`."""
    from fastast_cli.inference.backends import cache_key

    return ChoiceKey(
        processor=processor_name(device),
        vector_width=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(),
        versions=library_versions(),
        model=cache_key(model, method),
        shape=tuple(int(size) for size in shape),
        device=device.type,
        dtype=str(dtype).removeprefix("torch."),
        candidates=tuple(sorted(candidates)),
        host_memory="kept" if freed_memory_kept() else "default",
    )


def pick_fastest(timings: dict[str, list[float]], min_gain: float = MIN_GAIN
                 ) -> tuple[str, str]:
    """The backend to run and why, from seconds per batch of each backend (`torch` included).

    A candidate wins over torch only when its median time beats torch's by more than the noise:
    more than `min_gain`, and more than the relative spread (max − min over median) of torch's
    or the candidate's own rounds. Among winners the fastest is picked; otherwise torch.
    """
    reference = statistics.median(timings[REFERENCE])

    def spread(seconds: list[float]) -> float:
        return (max(seconds) - min(seconds)) / statistics.median(seconds)

    best, best_gain = REFERENCE, 0.0
    for name, seconds in timings.items():
        if name == REFERENCE or not seconds:
            continue
        gain = reference / statistics.median(seconds) - 1.0
        noise = max(min_gain, spread(timings[REFERENCE]), spread(seconds))
        if gain > noise and gain > best_gain:
            best, best_gain = name, gain
    if best == REFERENCE:
        return REFERENCE, "no candidate beat torch by more than the noise"
    return best, f"{1 + best_gain:.2f}x torch"


def measure(forwards: dict[str, Forward], batch: torch.Tensor,
            timer: Callable[[Forward, torch.Tensor], float],
            warmup: int = WARMUP, rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Seconds per batch of each forward: `warmup` untimed calls each, then `rounds` rounds
    that time every forward once (interleaved, so machine load hits all alike), with a
    progress bar. A forward that raises is dropped (torch's error is raised)."""
    alive = dict(forwards)
    timings: dict[str, list[float]] = {name: [] for name in forwards}
    description = f"--backend auto: timing {', '.join(forwards)}"
    with progress_bar(description, (warmup + rounds) * len(forwards)) as advance:
        for step in range(warmup + rounds):
            for name, forward in list(alive.items()):
                advance()
                try:
                    seconds = timer(forward, batch)
                except Exception:
                    if name == REFERENCE:
                        raise
                    alive.pop(name)
                    timings.pop(name)
                    continue
                if step >= warmup:
                    timings[name].append(seconds)
    return timings


class ChoiceCache:
    """The cached decisions: one JSON object {key digest: record} in `path`. A file that cannot
    be read or parsed counts as empty; writes replace it atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return {}
        return content if isinstance(content, dict) else {}

    def get(self, key: ChoiceKey) -> BackendChoice | None:
        record = self.read().get(key.digest())
        try:
            return BackendChoice(str(record["backend"]),
                                 {str(k): float(v) for k, v in record["samples_per_s"].items()},
                                 str(record["reason"]), cached=True)
        except (TypeError, KeyError, AttributeError, ValueError):
            return None

    def put(self, key: ChoiceKey, choice: BackendChoice) -> None:
        entries = self.read()
        entries[key.digest()] = {"backend": choice.backend, "samples_per_s": choice.samples_per_s,
                                 "reason": choice.reason, "key": asdict(key)}
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(entries, indent=1, default=str), encoding="utf-8")
        except OSError:
            pass  # a cache that cannot be written only costs a measurement next time


def default_cache() -> ChoiceCache:
    from fastast_cli.inference.backends import user_cache_dir

    return ChoiceCache(user_cache_dir() / CHOICE_FILE)


def time_call(forward: Forward, batch: torch.Tensor, dtype: torch.dtype = torch.float32
              ) -> float:
    """Seconds of one synchronized call of `forward` on `batch` under `dtype`'s autocast."""
    with torch.inference_mode(), autocast(batch.device, dtype):
        synchronize(batch.device)
        start = time.perf_counter()
        forward(batch)
        synchronize(batch.device)
    return time.perf_counter() - start


def choose_backend(
    key: ChoiceKey,
    batch: torch.Tensor,
    load: Callable[[str], Forward],
    timer: Callable[[Forward, torch.Tensor], float],
    *,
    candidates: Sequence[str] | None = None,
    cache: ChoiceCache | None = None,
) -> BackendChoice:
    """The backend to run batches like `batch`: from `cache` when it holds `key`, else measured
    (each of torch and `candidates` made by `load(name)` and timed by `timer(forward, batch)`)
    and stored. No candidate (default: the available ones): torch, with nothing measured."""
    candidates = available_candidates() if candidates is None else list(candidates)
    candidates = [name for name in candidates if name != REFERENCE]
    if not candidates:
        return BackendChoice(REFERENCE, reason="the only backend available")
    cache = cache or default_cache()
    cached = cache.get(key)
    if cached is not None:
        return cached
    forwards = {REFERENCE: load(REFERENCE)}
    failed, left_out = [], []
    for name in candidates:
        try:
            forwards[name] = load(name)
        except FastASTError as error:  # refused for a reason worth saying (int8 parity)
            left_out.append(f"{name} left out: {error}")
        except Exception:  # a candidate that cannot load (missing extra, export refused) drops
            failed.append(name)
    timings = measure(forwards, batch, timer)
    failed += [name for name in forwards if name not in timings]
    backend, reason = pick_fastest(timings)
    if failed:
        reason += f"; {', '.join(failed)} failed to run"
    reason += "".join(f"; {line}" for line in left_out)
    samples = {name: batch.shape[0] / statistics.median(seconds)
               for name, seconds in timings.items()}
    choice = BackendChoice(backend, samples, reason)
    cache.put(key, choice)
    return choice


def auto_forward(
    model: nn.Module,
    make: Callable[[str], Forward],
    *,
    batch_size: int = CPU_MEASURE_BATCH,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_METHOD,
    cache: ChoiceCache | None = None,
) -> Forward:
    """The forward of the backend `choose_backend` picks for `model` at its current merging,
    batches of `batch_size` clips of its input shape (at most `CPU_MEASURE_BATCH` on a CPU) and
    `dtype` (default: fp16 autocast on CUDA, fp32 elsewhere; the onnxruntime backends, which
    run their fp32 or int8 export, are candidates at fp32 only). `make(name)` builds a
    backend's forward. Under torchrun the first process decides and the others follow it. The
    forward carries
    `.backend` (the name) and `.choice` (the `BackendChoice`)."""
    device = next(model.parameters()).device
    dtype = dtype or resolve_dtype("auto", device)
    if device.type != "cuda":
        batch_size = min(batch_size, CPU_MEASURE_BATCH)
    made: dict[str, Forward] = {}

    def load(name: str) -> Forward:
        made[name] = made.get(name) or make(name)
        check_int8_parity(made[name])
        return made[name]

    ranks = current_ranks()
    choice = None
    if ranks.is_main:
        spec = input_spec(model)
        generator = torch.Generator().manual_seed(0)
        batch = torch.randn((batch_size, spec.target_length, spec.num_mel_bins),
                            generator=generator).to(device)
        candidates = [name for name in available_candidates()  # onnxruntime: fp32 only
                      if dtype == torch.float32 or name not in ONNX_CANDIDATES]
        key = choice_key(model, batch.shape, device, dtype, method, candidates)
        choice = choose_backend(key, batch, load, functools.partial(time_call, dtype=dtype),
                                candidates=candidates, cache=cache)
    if ranks.active:
        choice = ranks.gather(choice)[0]
    assert choice is not None
    forward = load(choice.backend)
    forward.choice = choice  # type: ignore[attr-defined]
    return forward


def check_int8_parity(forward: Forward) -> None:
    """Refuse (FastASTError) a forward whose recorded int8 parity is below `MIN_AGREEMENT`
    top-1 agreement: `auto` picks the fastest backend, not one that scores differently."""
    parity = getattr(forward, "parity", None)
    if parity is not None and parity.top1_agreement < MIN_AGREEMENT:
        raise FastASTError(f"its top-1 agreement with the model is "
                           f"{100 * parity.top1_agreement:.1f} % (< {100 * MIN_AGREEMENT:g} %)")
