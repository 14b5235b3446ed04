"""Inference backends side by side: eager, torch.compile, onnxruntime (fp32 and int8) and
transformers' AST.

One run, one machine, interleaved timing (every round times every setting once, a plain matmul
included), median per setting. Besides samples/s it prints the matmul peak measured in the same
run and each setting's GFLOP/s as a share of it, and at each r the speedup over eager r = 0
divided by the FLOP speedup (>= 1.0: merging costs nothing beyond its FLOPs). Goals (issue 14):
no default backend slower than eager at any r; at r = 0 the best backend >= 90 % of the matmul
peak; at r = 20 and 40 its speedup / FLOP speedup >= 1.0.

    .venv/bin/python benchmarks/bench_backends.py                   # base AST, ESC-50 shape, CPU
    .venv/bin/python benchmarks/bench_backends.py --device cuda --dtype bf16 --batch-size 64
    .venv/bin/python benchmarks/bench_backends.py --model tiny --runs 1 --backends torch,onnxruntime

int8 on CPU (issue 24: goal >= 1.5x fp32 onnxruntime at equal r, top-1 agreement >= 99 % on a
trained model): add onnxruntime-int8 and give a trained checkpoint, whose shape and labels then
replace --model and --preset; --data (a prepared dataset) gives real clips for the parity,
else synthetic audio through the same features. Without --checkpoint, --train-epochs N first
trains --model for N epochs on the generated demo set (its shape, its clips for the parity):

    .venv/bin/python benchmarks/bench_backends.py --backends torch,onnxruntime,onnxruntime-int8 \
        --checkpoint runs/kd/best.pt --data data/esc50
    .venv/bin/python benchmarks/bench_backends.py --backends onnxruntime,onnxruntime-int8 \
        --model small --train-epochs 4

--depth, --stride and --frames change the random-weight model's shape (e.g. the demo's tiny AST:
--model tiny --depth 4 --stride 16 --frames 200, 98 tokens; int8's speed does not depend on the
weights, so a random-weight small or base model measures it at those sizes); --threads sets the
threads of every backend (onnxruntime takes PyTorch's).

    .venv/bin/python benchmarks/bench_backends.py --backends onnxruntime,onnxruntime-int8 \
        --model base --depth 4 --stride 16 --frames 200 --r 0,8 --threads 1

Besides the table it prints, at each r, int8's speed as a ratio of fp32 onnxruntime's from the
same interleaved run, and its top-1 agreement and max probability difference against PyTorch.
Every onnxruntime session runs with thread spinning off (export.onnx_session): a spinning idle
worker of one session would take the cores from the setting timed after it (it made int8 read
0.74x fp32 where it runs at 1.68x, and PyTorch rows after onnxruntime ones slower).
onnxruntime always runs fp32 (int8 linear layers for onnxruntime-int8; on CUDA when
onnxruntime-gpu provides it); --dtype applies to the PyTorch settings (autocast). ONNX exports
go to a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import machine_line
from rich.console import Console

from fastast_cli import build_model
from fastast_cli.cli.options import parse_backends
from fastast_cli.data.manifest import load_manifest
from fastast_cli.devices import resolve_device, resolve_dtype, synchronize
from fastast_cli.evaluation.flops import count_flops
from fastast_cli.evaluation.throughput import final_tokens, time_forward
from fastast_cli.export.hf import export_hf
from fastast_cli.export.parity import dataset_features
from fastast_cli.export.quantize import QuantParity, audio_features, int8_parity
from fastast_cli.host_memory import keep_freed_memory
from fastast_cli.inference.backends import make_forward
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.presets import PRESETS
from fastast_cli.reports.tables import Column, rich_table

MATMUL = "matmul peak"


def matmul_timer(size: int, device: torch.device, dtype: torch.dtype) -> tuple[Callable, float]:
    """A timed square matmul (the machine's practical peak) and its GFLOP per call."""
    work_dtype = torch.float32 if dtype == torch.float32 else dtype
    a = torch.randn(size, size, device=device, dtype=work_dtype)
    b = torch.randn(size, size, device=device, dtype=work_dtype)

    def run() -> float:
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        return time.perf_counter() - start

    return run, 2 * size**3 / 1e9


def transformers_forward(model: torch.nn.Module, folder: Path, device: torch.device) -> Callable:
    """transformers' ASTForAudioClassification (SDPA attention) with `model`'s weights, via the
    Hugging Face folder `fastast export --format hf` writes."""
    from transformers import ASTForAudioClassification

    export_hf(model, folder)
    reference = ASTForAudioClassification.from_pretrained(folder, attn_implementation="sdpa")
    reference = reference.to(device).eval()
    return lambda fbank: reference(input_values=fbank).logits


def trained_on_demo(size: str, epochs: int, folder: Path, depth: int = 12,
                    stride: int = 10) -> tuple[Path, Path]:
    """Train a `size` AST (`depth` blocks, patches every `stride` bins and frames) for `epochs`
    on the generated demo set in `folder`: its best checkpoint and the demo's manifest."""
    from fastast_cli.data.prepare import prepare_demo
    from fastast_cli.training.config import TrainConfig
    from fastast_cli.training.loop import train

    prepare_demo(folder / "demo")
    manifest = folder / "demo" / "manifest.yaml"
    train(TrainConfig(model="ast", size=size, depth=depth, fstride=stride, tstride=stride,
                      data=str(manifest), out=str(folder / "run"), epochs=epochs,
                      batch_size=8, lr=2e-4, loss="ce", num_workers=0, lr_start=99))
    return folder / "run" / "best.pt", manifest


def int8_parities(model: torch.nn.Module, forwards: dict[str, Callable], rs: list[int],
                  features: torch.Tensor, source: str) -> dict[int, QuantParity]:
    """At each r, the int8 forward's top-1 agreement and max probability difference against
    the model in PyTorch (fp32) on `features`."""
    parities = {}
    for r in rs:
        model.set_r(r)
        forward = forwards[f"onnxruntime-int8 r={r}"]
        parities[r] = int8_parity(model, lambda batch, f=forward: f(torch.from_numpy(batch))
                                  .numpy(), features, source)
    model.set_r(0)
    return parities


def main() -> None:
    keep_freed_memory()  # as the fastast command does: timings match what users get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base", choices=["tiny", "small", "base"])
    parser.add_argument("--preset", default="esc50", choices=list(PRESETS))
    parser.add_argument("--depth", type=int, default=12, help="blocks of --model (demo: 4)")
    parser.add_argument("--stride", type=int, default=10, help="patch stride in mel bins and "
                        "frames of --model (demo: 16)")
    parser.add_argument("--frames", type=int, help="input frames of --model (default: the "
                        "preset's; demo: 200)")
    parser.add_argument("--threads", type=int, help="threads of every backend (default: "
                        "PyTorch's)")
    parser.add_argument("--r", default="0,20,40", help="comma list, 0 first")
    parser.add_argument("--backends", default="torch,compile,onnxruntime")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls (compile: first)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--checkpoint", type=Path, help="a trained model (replaces --model and "
                        "--preset): int8's parity is only meaningful on one")
    parser.add_argument("--data", type=Path, help="prepared dataset: its evaluation clips for "
                        "int8's parity (default: synthetic audio)")
    parser.add_argument("--train-epochs", type=int, default=0, help="without --checkpoint: "
                        "train --model this long on the demo set first")
    parser.add_argument("--parity-clips", type=int, default=256, help="clips int8's parity is "
                        "measured on (at most the evaluation split's; 99 %% needs >= 100)")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)  # onnxruntime's sessions take the same
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    preset = PRESETS[args.preset]
    rs = [int(v) for v in args.r.split(",")]
    backends = parse_backends(args.backends)
    torch.manual_seed(0)
    cache = tempfile.TemporaryDirectory(prefix="bench-backends-")
    if args.checkpoint is None and args.train_epochs > 0:
        args.checkpoint, args.data = trained_on_demo(args.model, args.train_epochs,
                                                     Path(cache.name), args.depth, args.stride)
    if args.checkpoint is not None:
        model = load_classifier(args.checkpoint, 0)
        described = f"{args.checkpoint} ({model.input_spec().target_length} frames)"
    else:
        frames = args.frames or preset.target_length
        model = build_model(args.model, preset.num_classes, target_length=frames,
                            depth=args.depth, fstride=args.stride, tstride=args.stride)
        described = (f"{args.model} AST ({args.depth} blocks, stride {args.stride}, random "
                     f"weights), {frames} frames")
    model = model.to(device).eval()
    spec = model.input_spec()
    batch = torch.randn(args.batch_size, spec.target_length, spec.num_mel_bins, device=device)

    forwards: dict[str, Callable] = {}
    gflops: dict[str, float] = {}
    for r in rs:
        model.set_r(r)
        flops = count_flops(model, batch[:1]) / 1e9
        for backend in backends:
            name = f"{backend} r={r}"
            forwards[name] = make_forward(model, backend, cache_dir=cache.name)
            gflops[name] = flops
    model.set_r(0)
    forwards["transformers r=0"] = transformers_forward(model, Path(cache.name) / "hf", device)
    gflops["transformers r=0"] = gflops[f"{backends[0]} r=0"]
    matmul, matmul_gflop = matmul_timer(args.matmul_size, device, dtype)

    def run(setting: str) -> float:
        if setting == MATMUL:
            return matmul()
        return time_forward(forwards[setting], batch, device, dtype)

    parities: dict[int, QuantParity] = {}
    if "onnxruntime-int8" in backends:  # (its graphs warm up on the way)
        if args.data is not None:
            features = dataset_features(model, load_manifest(args.data), args.parity_clips)
            source = f"clips of {args.data}"
        else:
            features = audio_features(model, args.parity_clips)
            source = "synthetic audio clips"
        parities = int8_parities(model, forwards, rs, features, source)

    settings = [MATMUL, *forwards]
    for setting in settings:
        for _ in range(args.warmup):
            run(setting)
    timings: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(args.runs):
        for setting in settings:
            timings[setting].append(run(setting))
    cache.cleanup()

    peak = matmul_gflop / statistics.median(timings[MATMUL])
    speed = {s: args.batch_size / statistics.median(timings[s]) for s in forwards}
    eager = speed[f"{backends[0]} r=0"]
    rows = []
    for setting in forwards:
        backend, r = setting.split(" r=")
        flop_speedup = gflops[f"{backends[0]} r=0"] / gflops[setting]
        achieved = gflops[setting] * speed[setting]
        rows.append({
            "backend": backend, "r": int(r), "tokens": final_tokens(model, int(r), "constant"),
            "gflops": gflops[setting], "samples_per_s": speed[setting],
            "speedup": speed[setting] / eager, "flop_speedup": flop_speedup,
            "efficiency": speed[setting] / eager / flop_speedup,
            "gflop_s": achieved, "of_peak": 100 * achieved / peak,
        })
    columns = [
        Column("backend", "backend"),
        Column("r", "r"),
        Column("tokens", "tokens left"),
        Column("gflops", "GFLOPs/sample", "{:.2f}"),
        Column("samples_per_s", "samples/s", "{:.2f}"),
        Column("speedup", f"speedup vs {backends[0]} r=0", "{:.2f}", "x"),
        Column("flop_speedup", "FLOP speedup", "{:.2f}", "x"),
        Column("efficiency", "speedup / FLOP speedup", "{:.2f}"),
        Column("gflop_s", "GFLOP/s", "{:.1f}"),
        Column("of_peak", "% of matmul peak", "{:.0f}", "%"),
    ]
    console = Console(width=170)
    console.print(machine_line(device))
    title = (
        f"{described}, batch "
        f"{args.batch_size}, {device.type} {str(dtype).replace('torch.', '')}, "
        f"{torch.get_num_threads()} threads, median of {args.runs} interleaved runs"
    )
    console.print(rich_table(title, rows, columns))
    console.print(f"matmul peak ({args.matmul_size}² {str(dtype).replace('torch.', '')}, same "
                  f"run): {peak:.1f} GFLOP/s")
    for r in rs:
        ours = [row for row in rows if row["r"] == r and row["backend"] != "transformers"]
        best = max(ours, key=lambda row: row["samples_per_s"])
        goal = "≥ 90 % of peak" if r == 0 else "speedup / FLOP speedup ≥ 1.0"
        console.print(
            f"r={r}: fastest {best['backend']} at {best['samples_per_s']:.2f} samples/s, "
            f"{best['of_peak']:.0f} % of peak, speedup / FLOP speedup {best['efficiency']:.2f} "
            f"(goal: {goal})"
        )
    for r, parity in parities.items():
        ratio = ""
        if "onnxruntime" in backends:
            ratio = (f"{speed[f'onnxruntime-int8 r={r}'] / speed[f'onnxruntime r={r}']:.2f}x "
                     "fp32 onnxruntime, ")
        trained = "" if args.checkpoint else " (random weights: pass --checkpoint)"
        console.print(f"r={r}: onnxruntime-int8 {ratio}{parity.describe()}{trained} (goal: "
                      ">= 1.5x, >= 99 %)")


if __name__ == "__main__":
    main()
