"""Throughput of ElasticAST on variable-length clips: packed rows against padding to the longest.

One batch of clips with lengths drawn uniformly from 1–10 s (as real data: AudioSet clips are cut
short, ESC-50 / FSD50K clips vary), run through one model four ways:

- padded: every clip zero-padded to the longest clip of the batch, one clip per row, no mask
  (the usual fixed-length batch; the fastest dense path);
- packed at each `--max-tokens`: native lengths, greedy rows, block-diagonal attention;
- packed + ToMe: the same with token merging inside each clip (`--r`: int or fraction).

Timing as in `bench_throughput.py`: warm-up per setting, then every setting once per round,
`--runs` rounds, median per setting. Prints the table and the two ratios held to a goal:
packing alone >= 1.5x the padded batch, packing with merging more.

On a CPU that other jobs keep busy, OpenMP workers that spin between ops (the default wait
policy) steal the cores from the main thread and turn every small op into milliseconds, which
hits the many small index ops of packing and merging hardest. The script therefore sets
`OMP_WAIT_POLICY=PASSIVE` (unless already set) before torch loads; it changes no result.

    .venv/bin/python benchmarks/bench_elastic.py                  # tiny, 32 clips, CPU fp32
    .venv/bin/python benchmarks/bench_elastic.py --threads 1      # one core
    .venv/bin/python benchmarks/bench_elastic.py --model small --max-tokens 512,2048
    .venv/bin/python benchmarks/bench_elastic.py --device cuda --dtype fp16 --batch-size 256
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see the docstring

import argparse  # noqa: E402
import statistics  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from machine import machine_line  # noqa: E402
from rich.console import Console  # noqa: E402

from fastast_cli.data.elastic_features import frames_for_seconds  # noqa: E402
from fastast_cli.devices import resolve_device, resolve_dtype  # noqa: E402
from fastast_cli.evaluation.throughput import time_forward  # noqa: E402
from fastast_cli.host_memory import keep_freed_memory
from fastast_cli.models.elastic import ElasticAST, build_elastic  # noqa: E402
from fastast_cli.models.reduction.layout import Layout  # noqa: E402
from fastast_cli.reports.tables import Column, rich_table  # noqa: E402


@dataclass
class Setting:
    """One way to run the batch: which clips (padded or native), row budget, merging."""

    name: str
    clips: list[torch.Tensor]
    max_tokens: int
    r: int | float


def parse_r(text: str) -> int | float:
    """`8` → 8 tokens per block per clip; `0.05` → 5% of each clip's patches per block."""
    return float(text) if "." in text else int(text)


def draw_clips(
    count: int, low: float, high: float, seed: int, device: torch.device
) -> tuple[list[torch.Tensor], list[float]]:
    """`count` random normalized fbanks [T_i, 128] of lengths uniform in [low, high] seconds."""
    generator = torch.Generator().manual_seed(seed)
    seconds = (low + (high - low) * torch.rand(count, generator=generator)).tolist()
    clips = [torch.randn(frames_for_seconds(s), 128, generator=generator) for s in seconds]
    return [clip.to(device) for clip in clips], seconds


def pad_to_longest(clips: list[torch.Tensor]) -> list[torch.Tensor]:
    longest = max(len(clip) for clip in clips)
    return [F.pad(clip, (0, 0, 0, longest - len(clip))) for clip in clips]


def describe(model: ElasticAST, setting: Setting, real_tokens: int) -> dict[str, object]:
    """Rows, row length, share of padding (frames or slots) and tokens after the last block."""
    model.max_tokens = setting.max_tokens
    model.set_r(setting.r)
    layout: Layout = model.pack(setting.clips)
    slots = layout.num_rows * layout.length
    final = sum(model.token_counts(n)[-1] for n in layout.counts)
    return {
        "rows": f"{layout.num_rows} × {layout.length}",
        "padding": 1 - real_tokens / slots,
        "tokens_in": layout.num_tokens,
        "tokens_out": final,
    }


def main() -> None:
    keep_freed_memory()  # as the fastast command does: timings match what users get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=32, help="clips per batch")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--max-tokens", default="512,1024", help="comma list of row budgets")
    parser.add_argument("--r", default="0.05", help="merging: int per block, or a fraction")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pooling", default="attention", choices=["attention", "cls-dist"],
                        help="attention: ElasticAST's, as new runs train; cls-dist: earlier")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    budgets = [int(v) for v in args.max_tokens.split(",")]
    r = parse_r(args.r)
    torch.manual_seed(args.seed)
    model = build_elastic(args.model, 527, target_length=1024,
                          pooling=args.pooling).to(device).eval()
    clips, seconds = draw_clips(
        args.batch_size, args.min_seconds, args.max_seconds, args.seed, device
    )
    padded = pad_to_longest(clips)

    settings = [Setting("padded to longest", padded, model.num_tokens(padded[0]), 0)]
    settings += [Setting(f"packed, max_tokens {b}", clips, b, 0) for b in budgets]
    settings += [Setting(f"packed {b} + ToMe r={r}", clips, b, r) for b in budgets]

    def run(setting: Setting) -> float:
        model.max_tokens = setting.max_tokens
        model.set_r(setting.r)
        return time_forward(model, setting.clips, device, dtype)

    for setting in settings:
        for _ in range(args.warmup):
            run(setting)
    timings: dict[str, list[float]] = {s.name: [] for s in settings}
    for _ in range(args.runs):
        for setting in settings:
            timings[setting.name].append(run(setting))

    audio = sum(seconds)
    real_tokens = sum(model.num_tokens(clip) for clip in clips)
    baseline = statistics.median(timings[settings[0].name])
    rows = []
    for setting in settings:
        median = statistics.median(timings[setting.name])
        rows.append(
            {
                "setting": setting.name,
                **describe(model, setting, real_tokens),
                "clips_per_s": len(clips) / median,
                "audio_per_s": audio / median,
                "speedup": baseline / median,
            }
        )
    columns = [
        Column("setting", "setting"),
        Column("rows", "rows × length"),
        Column("padding", "padding", "{:.0%}"),
        Column("tokens_in", "tokens in"),
        Column("tokens_out", "tokens out"),
        Column("clips_per_s", "clips/s", "{:.1f}"),
        Column("audio_per_s", "audio s/s", "{:.1f}"),
        Column("speedup", "vs padded", "{:.2f}", "x"),
    ]
    title = (
        f"ElasticAST {args.model}, {len(clips)} clips of {args.min_seconds:g}–"
        f"{args.max_seconds:g} s ({audio:.0f} s of audio), {device.type} "
        f"{str(dtype).replace('torch.', '')}, {torch.get_num_threads()} threads, "
        f"median of {args.runs} interleaved runs"
    )
    console = Console(width=150)
    console.print(machine_line(device))
    console.print(rich_table(title, rows, columns))
    packing = max(rows[1 : 1 + len(budgets)], key=lambda row: row["speedup"])
    merged = max(rows[1 + len(budgets) :], key=lambda row: row["speedup"])
    console.print(
        f"packing alone ({packing['setting']}): {packing['speedup']:.2f}x the padded batch "
        "(goal >= 1.5)"
    )
    console.print(
        f"packing + merging ({merged['setting']}): {merged['speedup']:.2f}x the padded batch "
        f"(goal > packing alone: {merged['speedup'] > packing['speedup']})"
    )


if __name__ == "__main__":
    main()
