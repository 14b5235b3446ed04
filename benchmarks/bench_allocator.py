"""CPU forward passes with glibc's default malloc and with freed memory kept (host_memory).

The malloc settings are process-wide and last, so the two cannot share a process: this script
starts fresh child processes in turn (default, kept, default, kept, ...), each of which builds
the same random-weight model, warms it up and times `--passes` forward passes at every r
(interleaved), counting the page faults of the timed passes. Printed: ms per forward (median
over all children of each kind), the kept ÷ default speed ratio, page faults per forward, the
speedup over r = 0 ÷ FLOP speedup within each kind, and the children's peak resident memory.

    .venv/bin/python benchmarks/bench_allocator.py                       # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_allocator.py --model base --frames 512 --stride 10 \
        --r 0,20,40 --children 2 --passes 2                              # ESC-50 shape, ~5 min
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from machine import machine_line
from rich.console import Console

from fastast_cli import build_model
from fastast_cli.evaluation.flops import count_flops
from fastast_cli.host_memory import keep_freed_memory
from fastast_cli.reports.tables import Column, rich_table

KINDS = ("default", "kept")


def model_of(args: argparse.Namespace) -> torch.nn.Module:
    """The random-weight model every process times (same seed, so the same weights), in eval."""
    torch.manual_seed(0)
    model = build_model(args.model, 10, target_length=args.frames, fstride=args.stride,
                        tstride=args.stride)
    return model.eval()


def child(args: argparse.Namespace) -> None:
    """One child: time the passes of every r, print {r: [seconds...], faults, rss} as JSON."""
    if args.child == "kept" and not keep_freed_memory():
        raise SystemExit("malloc is not glibc's here: nothing to compare")
    model = model_of(args)
    batch = torch.randn(args.batch_size, args.frames, 128)
    rs = [int(v) for v in args.r.split(",")]
    seconds: dict[int, list[float]] = {r: [] for r in rs}
    faults: dict[int, int] = dict.fromkeys(rs, 0)
    with torch.inference_mode():
        for r in rs:  # warm-up: two passes at every r
            model.set_r(r)
            model(batch)
            model(batch)
        for _ in range(args.passes):
            for r in rs:
                model.set_r(r)
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                model(batch)
                seconds[r].append(time.perf_counter() - start)
                faults[r] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"seconds": seconds, "faults": faults,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(args: argparse.Namespace, kind: str) -> dict:
    """The JSON of one child process of `kind`."""
    command = [sys.executable, __file__, "--child", kind, "--model", args.model,
               "--batch-size", str(args.batch_size), "--frames", str(args.frames),
               "--stride", str(args.stride),
               "--r", args.r, "--passes", str(args.passes)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--stride", type=int, default=16, help="patch stride, both axes")
    parser.add_argument("--r", default="0,8,16", help="comma-separated; the first is the reference")
    parser.add_argument("--passes", type=int, default=5, help="timed passes per r per child")
    parser.add_argument("--children", type=int, default=4, help="child processes of each kind")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    rs = [int(v) for v in args.r.split(",")]
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for _ in range(args.children):
        for kind in KINDS:
            results[kind].append(run_child(args, kind))
    model = model_of(args)
    sample = torch.randn(1, args.frames, 128)
    flops = {}
    for r in rs:
        model.set_r(r)
        flops[r] = count_flops(model, sample)

    def ms(kind: str, r: int) -> float:
        return 1000 * statistics.median(
            s for result in results[kind] for s in result["seconds"][str(r)])

    def faults(kind: str, r: int) -> float:
        passes = args.children * args.passes
        return sum(result["faults"][str(r)] for result in results[kind]) / passes

    rows = []
    for r in rs:
        row = {"r": r, "flop_speedup": flops[rs[0]] / flops[r]}
        for kind in KINDS:
            row[f"{kind}_ms"] = ms(kind, r)
            row[f"{kind}_faults"] = faults(kind, r)
            row[f"{kind}_efficiency"] = ms(kind, rs[0]) / ms(kind, r) / row["flop_speedup"]
        row["ratio"] = row["default_ms"] / row["kept_ms"]
        rows.append(row)
    columns = [
        Column("r", "r"),
        Column("default_ms", "ms/forward default", "{:.1f}"),
        Column("kept_ms", "ms/forward kept", "{:.1f}"),
        Column("ratio", "kept speed / default", "{:.2f}", "x"),
        Column("default_faults", "faults/forward default", "{:.0f}"),
        Column("kept_faults", "faults/forward kept", "{:.0f}"),
        Column("flop_speedup", "FLOP speedup", "{:.2f}", "x"),
        Column("default_efficiency", "speedup / FLOP speedup default", "{:.2f}"),
        Column("kept_efficiency", "speedup / FLOP speedup kept", "{:.2f}"),
    ]
    rss = {kind: max(result["rss_mb"] for result in results[kind]) for kind in KINDS}
    console = Console(width=150)
    console.print(machine_line("cpu"))
    title = (f"{args.model} AST, random weights, {model.config.num_patches} patches, batch "
             f"{args.batch_size}, {torch.get_num_threads()} threads: {args.children} child "
             f"processes of each kind in turn, {args.passes} timed passes per r each, median")
    console.print(rich_table(title, rows, columns))
    console.print(f"peak resident memory: default {rss['default']:.0f} MB, kept "
                  f"{rss['kept']:.0f} MB")


if __name__ == "__main__":
    main()
