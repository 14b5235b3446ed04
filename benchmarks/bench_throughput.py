"""Inference throughput of fastast's AST against Hugging Face transformers' AST, and ToMe speedups.

One run, one machine, interleaved timing (every round times every setting once), median per
setting. Prints two ratios the engine is held to:

- fastast at r = 0 vs transformers' AST (SDPA attention) on the same input and threads: >= 1.0×;
- at each r, measured speedup / FLOP speedup: >= 0.9 (merging overhead stays small).

    .venv/bin/python benchmarks/bench_throughput.py                 # base AST, ESC-50 shape, CPU
    .venv/bin/python benchmarks/bench_throughput.py --device cuda --dtype fp16 --batch-size 64

On CUDA each setting's forward peak memory is printed too (the most allocated during its
forward beyond what was resident before it: both models' weights and the input batch, which
stay on the GPU throughout, are not counted); --json PATH also writes the rows, the
settings and the machine as JSON (benchmarks/gpu_check.sh collects them into one table).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from machine import machine_facts, machine_line
from rich.console import Console
from torch import nn

from fastast_cli import build_model
from fastast_cli.devices import resolve_device, resolve_dtype
from fastast_cli.evaluation.flops import count_flops
from fastast_cli.evaluation.throughput import final_tokens, time_forward
from fastast_cli.host_memory import keep_freed_memory
from fastast_cli.presets import PRESETS
from fastast_cli.reports.tables import Column, rich_table


class HuggingFaceAST(nn.Module):
    """transformers' ASTForAudioClassification with SDPA attention, returning plain logits."""

    def __init__(self, size: str, frames: int, classes: int) -> None:
        super().__init__()
        from transformers import ASTConfig, ASTForAudioClassification

        dims = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}[size]
        config = ASTConfig(
            hidden_size=dims[0], num_attention_heads=dims[1], intermediate_size=4 * dims[0],
            max_length=frames, num_labels=classes, attn_implementation="sdpa",
        )
        self.model = ASTForAudioClassification(config)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=fbank).logits


def main() -> None:
    keep_freed_memory()  # as the fastast command does: timings match what users get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base", choices=["tiny", "small", "base"])
    parser.add_argument("--preset", default="esc50", choices=list(PRESETS))
    parser.add_argument("--r", default="0,10,20,30,40", help="comma list, 0 first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    preset = PRESETS[args.preset]
    rs = [int(v) for v in args.r.split(",")]
    torch.manual_seed(0)
    ours = build_model(args.model, preset.num_classes, target_length=preset.target_length)
    ours = ours.to(device).eval()
    reference = HuggingFaceAST(args.model, preset.target_length, preset.num_classes)
    reference = reference.to(device).eval()
    batch = torch.randn(args.batch_size, preset.target_length, 128, device=device)

    settings = ["transformers"] + [f"r={r}" for r in rs]
    peak_mib: dict[str, float] = {}

    def run(setting: str) -> float:
        resident = 0.0  # both models' weights and the input: not this setting's own
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device) / 2**20
        if setting == "transformers":
            seconds = time_forward(reference, batch, device, dtype)
        else:
            ours.set_r(int(setting[2:]))
            seconds = time_forward(ours, batch, device, dtype)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20 - resident
            peak_mib[setting] = max(peak_mib.get(setting, 0.0), peak)
        return seconds

    for setting in settings:
        for _ in range(args.warmup):
            run(setting)
    timings: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(args.runs):
        for setting in settings:
            timings[setting].append(run(setting))
    speed = {s: args.batch_size / statistics.median(t) for s, t in timings.items()}

    flops = {}
    for r in rs:
        ours.set_r(r)
        flops[r] = count_flops(ours, batch[:1]) / 1e9
    flops_reference = count_flops(reference, batch[:1]) / 1e9

    rows = [{
        "setting": "transformers AST (SDPA)", "tokens": ours.config.num_patches + 2,
        "gflops": flops_reference, "samples_per_s": speed["transformers"],
        "speedup": 1.0, "flop_speedup": 1.0, "efficiency": 1.0,
        "peak_mib": peak_mib.get("transformers"),
    }]
    for r in rs:
        speedup = speed[f"r={r}"] / speed[f"r={rs[0]}"]
        flop_speedup = flops[rs[0]] / flops[r]
        rows.append({
            "setting": f"fastast r={r}", "tokens": final_tokens(ours, r, "constant"),
            "gflops": flops[r], "samples_per_s": speed[f"r={r}"], "speedup": speedup,
            "flop_speedup": flop_speedup, "efficiency": speedup / flop_speedup,
            "r": r, "peak_mib": peak_mib.get(f"r={r}"),
        })
    columns = [
        Column("setting", "setting"),
        Column("tokens", "tokens left"),
        Column("gflops", "GFLOPs/sample", "{:.2f}"),
        Column("samples_per_s", "samples/s", "{:.2f}"),
        Column("speedup", "speedup vs r=0", "{:.2f}", "x"),
        Column("flop_speedup", "FLOP speedup", "{:.2f}", "x"),
        Column("efficiency", "speedup / FLOP speedup", "{:.2f}"),
        *([Column("peak_mib", "forward peak MiB", "{:.0f}")] if device.type == "cuda" else []),
    ]
    console = Console(width=150)
    console.print(machine_line(device))
    title = (
        f"{args.model} AST, {args.preset} shape ({preset.target_length} frames), batch "
        f"{args.batch_size}, {device.type} {str(dtype).replace('torch.', '')}, "
        f"{torch.get_num_threads()} threads, median of {args.runs} interleaved runs"
    )
    console.print(rich_table(title, rows, columns))
    ratio = speed[f"r={rs[0]}"] / speed["transformers"]
    console.print(f"fastast r={rs[0]} vs transformers: {ratio:.2f}x (goal >= 1.0)")
    worst = min(row["efficiency"] for row in rows[2:]) if len(rows) > 2 else float("nan")
    console.print(f"lowest speedup / FLOP speedup over r > {rs[0]}: {worst:.2f} (goal >= 0.9)")
    if args.json is not None:
        record = {"model": args.model, "preset": args.preset, "frames": preset.target_length,
                  "batch_size": args.batch_size, "device": device.type,
                  "dtype": str(dtype).removeprefix("torch."), "runs": args.runs,
                  "machine": machine_facts(device), "rows": rows}
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
