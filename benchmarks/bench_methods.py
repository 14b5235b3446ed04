"""Token-reduction methods side by side at equal cost: accuracy drop and speedup ÷ FLOP speedup.

A small AST is trained without merging on spectrogram-like data this script generates (each
class: a band of mel bins lit for a while, some classes pulsed), then every method (tome,
pitome, evit, tofu, random) runs off the shelf at the r given by `--r`, or else at the two r
that give about 1.5× and 2× measured speedup for ToMe (one quick interleaved measurement picks
them; every method removes exactly r tokens per block, so the same r is the same cost for all).
Reported per timing batch (`--batch-size 8,32`) and method × r: accuracy, drop vs r = 0,
samples/s, speedup, FLOP speedup and their ratio, all timings of one batch from ONE interleaved
loop with one r = 0 reference. The ratio is given twice: from the median round per setting
(the headline) and from the fastest round per setting (what a quiet machine gives: other
processes only ever add time). Goal: speedup ÷ FLOP speedup >= 0.95 for every method at every
r >= 4 (the merge step's fixed cost must not eat the gain).

Beside every row, the bound a free merge step would reach at that r (column "free-merge
bound"): a stand-in method, timed in the same loop, that drops the last r tokens of every row
by slicing (no similarity, no index, no copy). What it misses of 1.00 is the rest of the model
running fewer tokens less efficiently (smaller matrix products, per-op overhead); what a method
misses of the bound is its own merge step.

These are numbers of a small model on generated data, not of a real AST on real audio; for a
real checkpoint use `fastast sweep --method tome,pitome,evit,tofu,random --r 0:40:10 ...`.

    .venv/bin/python benchmarks/bench_methods.py                    # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_methods.py --r 4,8,16 --batch-size 8,32
    .venv/bin/python benchmarks/bench_methods.py --steps 20 --eval-clips 40 --runs 2   # smoke
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine_line
from rich.console import Console

from fastast_cli import build_model
from fastast_cli.evaluation.flops import count_flops
from fastast_cli.evaluation.throughput import time_forward
from fastast_cli.host_memory import keep_freed_memory
from fastast_cli.models.ast import AST
from fastast_cli.models.reduction import METHODS
from fastast_cli.models.reduction.matching import ReductionStep, TokenMatching
from fastast_cli.reports.tables import Column, rich_table

MEL_BINS = 128


def generate(num_classes: int, clips: int, frames: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Clips [clips, frames, 128] and labels [clips]: class c lights a band of mel bins at its
    own height for a random third of the clip (odd classes pulse it), over unit noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(clips) % num_classes
    fbank = torch.randn(clips, frames, MEL_BINS, generator=generator)
    band = (MEL_BINS - 16) // num_classes
    for index, label in enumerate(labels.tolist()):
        low = 8 + label * band
        start = int(torch.randint(0, frames - frames // 3, (1,), generator=generator))
        on = torch.zeros(frames)
        on[start: start + frames // 3] = 1.5
        if label % 2:
            on[start::8] = 0.0  # pulsed: off every 8th frame
        fbank[index, :, low: low + band] += on[:, None]
    return fbank, labels


def train(model: AST, fbank: torch.Tensor, labels: torch.Tensor, steps: int,
          batch_size: int, seed: int) -> float:
    """AdamW without merging for `steps` steps; returns the seconds it took."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    model.train().set_r(0)
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(0, len(fbank), (batch_size,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(fbank[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return time.perf_counter() - start


@torch.inference_mode()
def accuracy(model: AST, fbank: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of the model as set."""
    predicted = torch.cat([model(part).argmax(-1) for part in fbank.split(50)])
    return 100.0 * (predicted == labels).float().mean().item()


GOAL = 0.95  # lowest speedup ÷ FLOP speedup accepted at r >= 4 (issue 24)
FREE = "free"  # the stand-in for a merge step that costs nothing


class Truncation(TokenMatching):
    """The last r tokens of every dense row dropped by slicing: the cheapest possible step."""

    def __init__(self, r: int) -> None:
        self.r = r

    def merge(self, values: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        return values[:, : values.shape[1] - self.r]

    def combine(self, tokens: torch.Tensor,
                sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.merge(tokens), self.merge(sizes)


class FreeMerge:
    """Removes r tokens per block at no cost (`Truncation`): the bound for every method."""

    name = FREE

    def match(self, step: ReductionStep) -> Truncation:
        return Truncation(step.row_r)


def use(model: AST, setting: tuple[str, int]) -> None:
    """Set the model to (method, r); `FREE` plugs in `FreeMerge`."""
    method, r = setting
    model.set_r(r, method="tome" if method == FREE else method)
    if method == FREE:
        model.reduction = FreeMerge()


def timed_rounds(model: AST, settings: list[tuple[str, int]], batch: torch.Tensor,
                 runs: int) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], float]]:
    """Samples/s of every (method, r) from ONE interleaved loop (one untimed warm-up round,
    then `runs` rounds): (median round, fastest round)."""
    def run(setting: tuple[str, int]) -> float:
        use(model, setting)
        return time_forward(model, batch, batch.device, torch.float32)

    for setting in settings:
        run(setting)
    seconds: dict[tuple[str, int], list[float]] = {s: [] for s in settings}
    for _ in range(runs):
        for setting in settings:
            seconds[setting].append(run(setting))
    median = {s: len(batch) / statistics.median(t) for s, t in seconds.items()}
    fastest = {s: len(batch) / min(t) for s, t in seconds.items()}
    return median, fastest


def pick_rs(model: AST, batch: torch.Tensor, targets: list[float], runs: int) -> list[int]:
    """The r whose measured ToMe speedup is closest to each target (quick interleaved run)."""
    patches = model.config.num_patches
    candidates = sorted({max(1, round(patches * f / 100)) for f in range(1, 13)})
    speed = timed_rounds(model, [("tome", r) for r in [0, *candidates]], batch, runs)[0]
    speedup = {r: speed[("tome", r)] / speed[("tome", 0)] for r in candidates}
    return [min(candidates, key=lambda r: abs(speedup[r] - target)) for target in targets]


def method_rows(model: AST, settings: list[tuple[str, int]], batch: torch.Tensor, runs: int,
                test: tuple[torch.Tensor, torch.Tensor],
                metric: dict[tuple[str, int], float]) -> list[dict]:
    """One row per (method, r) of `settings` (the first is the r = 0 reference; `FREE` ones
    give the bound column, not rows): accuracy on `test` (kept in `metric` across timing
    batches), and speed from one interleaved loop on `batch`."""
    median, fastest = timed_rounds(model, settings, batch, runs)
    reference = settings[0]
    flops = {}
    for setting in settings:
        use(model, setting)
        if setting not in metric and setting[0] != FREE:
            metric[setting] = accuracy(model, *test)
        flops[setting] = count_flops(model, batch[:1]) / 1e9

    def efficiency(setting: tuple[str, int], speed: dict[tuple[str, int], float]) -> float:
        """Speedup over the reference ÷ FLOP speedup, from samples/s `speed`."""
        return speed[setting] / speed[reference] * flops[setting] / flops[reference]

    rows = []
    for method, r in settings:
        if method == FREE:
            continue
        flop_speedup = flops[reference] / flops[(method, r)]
        speedup = median[(method, r)] / median[reference]
        rows.append({
            "method": "none" if r == 0 else method, "r": r,
            "accuracy": metric[(method, r)], "drop": metric[reference] - metric[(method, r)],
            "samples_per_s": median[(method, r)], "speedup": speedup, "gflops": flops[(method, r)],
            "flop_speedup": flop_speedup, "efficiency": efficiency((method, r), median),
            "efficiency_fastest": efficiency((method, r), fastest),
            "bound": efficiency((FREE, r), median) if r else 1.0,
        })
    return rows


COLUMNS = [
    Column("method", "method"), Column("r", "r"),
    Column("accuracy", "accuracy %", "{:.1f}"), Column("drop", "drop (points)", "{:.1f}"),
    Column("gflops", "GFLOPs/sample", "{:.3f}"),
    Column("samples_per_s", "samples/s", "{:.1f}"),
    Column("speedup", "speedup", "{:.2f}", "x"),
    Column("flop_speedup", "FLOP speedup", "{:.2f}", "x"),
    Column("efficiency", "speedup / FLOP speedup", "{:.2f}"),
    Column("efficiency_fastest", "same, fastest rounds", "{:.2f}"),
    Column("bound", "free-merge bound", "{:.2f}"),
]


def main() -> None:
    keep_freed_memory()  # as the fastast command does: timings match what users get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "small", "base"])
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-clips", type=int, default=800)
    parser.add_argument("--eval-clips", type=int, default=200)
    parser.add_argument("--steps", type=int, default=120, help="training steps (batch 16)")
    parser.add_argument("--batch-size", default="16", help="timing batch(es), e.g. 8,32")
    parser.add_argument("--runs", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--r", help="r values to measure, e.g. 4,8,16 (default: picked for "
                                    "--targets)")
    parser.add_argument("--targets", default="1.5,2.0", help="measured ToMe speedups to match")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(args.model, args.classes, target_length=args.frames, fstride=16,
                        tstride=16)
    train_x, train_y = generate(args.classes, args.train_clips, args.frames, seed=1)
    test_x, test_y = generate(args.classes, args.eval_clips, args.frames, seed=2)
    seconds = train(model, train_x, train_y, args.steps, 16, seed=3)
    console = Console(width=170)
    console.print(machine_line("cpu"))
    metric: dict[tuple[str, int], float] = {}  # accuracy does not depend on the timing batch
    for batch_size in [int(v) for v in args.batch_size.split(",")]:
        batch = test_x[:batch_size]
        if args.r:
            rs = sorted({int(v) for v in args.r.split(",")})
            picked = ""
        else:
            targets = [float(v) for v in args.targets.split(",")]
            rs = sorted(set(pick_rs(model, batch, targets, runs=max(2, args.runs // 2))))
            picked = f"; r picked for ToMe speedups {args.targets}"
        settings = [("tome", 0)] + [(method, r) for r in rs for method in [*METHODS, FREE]]
        rows = method_rows(model, settings, batch, args.runs, (test_x, test_y), metric)
        title = (f"{args.model} AST trained {args.steps} steps ({seconds:.0f} s) on generated "
                 f"data, {args.frames} frames ({model.config.num_patches} patches), timing batch "
                 f"{batch_size}, {torch.get_num_threads()} threads, median of {args.runs} "
                 f"interleaved runs{picked}")
        console.print(rich_table(title, rows, COLUMNS))
        for method in METHODS:
            measured = [row for row in rows[1:] if row["method"] == method and row["r"] >= 4]
            if not measured:
                continue
            worst = min(measured, key=lambda row: row["efficiency"])
            worst_fastest = min(row["efficiency_fastest"] for row in measured)
            verdict = "ok" if worst["efficiency"] >= GOAL else "below goal"
            console.print(f"batch {batch_size} {method}: lowest speedup / FLOP speedup at r >= 4 "
                          f"{worst['efficiency']:.2f} at r = {worst['r']} (fastest rounds "
                          f"{worst_fastest:.2f}; a free merge step there {worst['bound']:.2f}; "
                          f"goal >= {GOAL}, {verdict})")


if __name__ == "__main__":
    main()
