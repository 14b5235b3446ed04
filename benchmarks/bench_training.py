"""Training throughput of an AST student: token merging during training (FastAST Train+Inf,
paper §3.1.2) and an online teacher (consistent teaching) against cached teacher logits.

One training step = student forward + Eq. 1 loss + backward + Adam step, on a fixed random
batch of the preset's shape; the online setting adds the frozen teacher's forward pass. All
settings are timed round by round (interleaved), median per setting, in one run.

    .venv/bin/python benchmarks/bench_training.py                       # tiny AST, ESC-50 shape
    .venv/bin/python benchmarks/bench_training.py --model base --device cuda --batch-size 24
    .venv/bin/python benchmarks/bench_training.py --compile 0,20   # + torch.compile'd steps

`--compile R,...` adds rows where the student runs through `torch.compile`, as `train-teacher`
and `distill --compile` run it (compilation happens in the untimed warm-up calls).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine_line
from rich.console import Console

from fastast_cli import build_model
from fastast_cli.devices import resolve_device, synchronize
from fastast_cli.evaluation.throughput import final_tokens
from fastast_cli.host_memory import keep_freed_memory
from fastast_cli.models.teachers import CNNClassifier, CNNConfig
from fastast_cli.presets import PRESETS
from fastast_cli.reports.tables import Column, rich_table
from fastast_cli.training.losses import distillation_loss, teacher_targets


def main() -> None:
    keep_freed_memory()  # as the fastast command does: timings match what users get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "small", "base"])
    parser.add_argument("--preset", default="esc50", choices=list(PRESETS))
    parser.add_argument("--r", default="0,10,20,40")
    parser.add_argument("--teacher", default="efficientnet-b2")
    parser.add_argument("--teacher-r", type=int, default=20, help="student r in teacher rows")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", default="", help="r values also timed with torch.compile")
    args = parser.parse_args()

    device = resolve_device(args.device)
    preset = PRESETS[args.preset]
    torch.manual_seed(0)
    student = build_model(args.model, preset.num_classes, target_length=preset.target_length)
    student = student.to(device).train()
    teacher = CNNClassifier(CNNConfig(preset.num_classes, args.teacher)).to(device).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-5)
    batch = torch.randn(args.batch_size, preset.target_length, 128, device=device)
    targets = torch.nn.functional.one_hot(
        torch.randint(preset.num_classes, (args.batch_size,)), preset.num_classes
    ).float().to(device)
    cached = torch.randn(args.batch_size, preset.num_classes, device=device)
    amp = device.type == "cuda"
    compiled = torch.compile(student)

    def step(r: int, teaching: str) -> float:
        student.set_r(r)
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, torch.float16, enabled=amp):
            logits = (compiled if teaching == "compiled" else student)(batch)
            if teaching == "online":
                with torch.no_grad():
                    teacher_logits = teacher(batch).float()
            else:
                teacher_logits = cached if teaching == "cached" else None
            taught = None if teacher_logits is None else teacher_targets(teacher_logits, "ce", 1.0)
            loss = distillation_loss(logits.float(), targets, taught, "ce")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        return time.perf_counter() - start

    rs = [int(v) for v in args.r.split(",")]
    settings = [(r, "none") for r in rs] + [(args.teacher_r, "online"), (args.teacher_r, "cached")]
    settings += [(int(v), "compiled") for v in args.compile.split(",") if v.strip()]
    for setting in settings:
        for _ in range(args.warmup):
            step(*setting)
    timings: dict[tuple[int, str], list[float]] = {s: [] for s in settings}
    for _ in range(args.runs):
        for setting in settings:
            timings[setting].append(step(*setting))
    speed = {s: args.batch_size / statistics.median(t) for s, t in timings.items()}
    base = speed[(rs[0], "none")]
    rows = [{
        "setting": f"r={r}" + {"none": "", "compiled": ", torch.compile"}.get(
            teaching, f", {teaching} teacher"),
        "tokens": final_tokens(student, r, "constant"),
        "samples_per_s": speed[(r, teaching)], "speedup": speed[(r, teaching)] / base,
    } for r, teaching in settings]
    columns = [
        Column("setting", "student training step"), Column("tokens", "tokens left"),
        Column("samples_per_s", "samples/s", "{:.2f}"),
        Column("speedup", f"vs r={rs[0]}, no teacher", "{:.2f}", "x"),
    ]
    console = Console(width=150)
    console.print(machine_line(device))
    console.print(rich_table(
        f"{args.model} AST student, {args.preset} shape, batch {args.batch_size}, {device.type}, "
        f"{args.teacher} teacher, {torch.get_num_threads()} threads, median of {args.runs} "
        "interleaved steps", rows, columns,
    ))
    online = speed[(args.teacher_r, "online")]
    cached_speed = speed[(args.teacher_r, "cached")]
    console.print(f"cached teacher logits vs online teacher at r={args.teacher_r}: "
                  f"{cached_speed / online:.2f}x")


if __name__ == "__main__":
    main()
