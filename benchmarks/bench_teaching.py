"""Training throughput of consistent teaching: an online teacher (EfficientNet-B2, AST) against
replayed views (`distill --teacher-views K`: the teacher's logits on K augmented views per clip,
computed once, looked up per step).

One training step = student forward + teacher predictions + Eq. 1 loss + backward + Adam step on
a fixed random batch of the preset's shape. Online, the frozen teacher runs on the batch; replayed,
the batch's logits come from a [K, N, C] table (with the mixup check every replay makes), as the
training loop does. The data pipeline is the same in every setting (the student's augmented
fbank; an AST or CNN teacher reads that very batch), so it is left out. All settings are timed
round by round (interleaved), median per setting, in one run; ratios are against replay.

    .venv/bin/python benchmarks/bench_teaching.py                        # base AST, CPU-sized
    .venv/bin/python benchmarks/bench_teaching.py --device cuda --batch-size 24 --preset audioset
    .venv/bin/python benchmarks/bench_teaching.py --student tiny --teacher-ast tiny --runs 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from machine import machine_line
from rich.console import Console
from torch import nn

from fastast_cli import build_model
from fastast_cli.devices import resolve_device, synchronize
from fastast_cli.host_memory import keep_freed_memory
from fastast_cli.models.teachers import CNNClassifier, CNNConfig
from fastast_cli.presets import PRESETS
from fastast_cli.reports.tables import Column, rich_table
from fastast_cli.training.losses import distillation_loss, teacher_targets
from fastast_cli.training.teacher import ReplayedViews


def frozen(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def main() -> None:
    keep_freed_memory()  # as the fastast command does: timings match what users get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default="base", choices=["tiny", "small", "base"])
    parser.add_argument("--teacher-ast", default="base", choices=["tiny", "small", "base"],
                        help="size of the online AST teacher")
    parser.add_argument("--teacher-cnn", default="efficientnet-b2")
    parser.add_argument("--preset", default="esc50", choices=list(PRESETS))
    parser.add_argument("--r", type=int, default=0, help="student tokens merged per block")
    parser.add_argument("--views", type=int, default=4, help="K views per clip (replay)")
    parser.add_argument("--clips", type=int, default=2000, help="clips in the replay table")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    preset = PRESETS[args.preset]
    classes, frames = preset.num_classes, preset.target_length
    torch.manual_seed(0)
    student = build_model(args.student, classes, target_length=frames).to(device).train()
    student.set_r(args.r)
    teachers = {
        f"online {args.teacher_cnn}": frozen(CNNClassifier(CNNConfig(classes, args.teacher_cnn)),
                                             device),
        f"online AST-{args.teacher_ast}": frozen(
            build_model(args.teacher_ast, classes, target_length=frames), device),
    }
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-5)
    batch = torch.randn(args.batch_size, frames, 128, device=device)
    targets = torch.nn.functional.one_hot(
        torch.randint(classes, (args.batch_size,)), classes).float().to(device)
    table = ReplayedViews({}, torch.randn(args.views, args.clips, classes),
                          torch.randint(args.clips, (args.views, args.clips)),
                          torch.rand(args.views, args.clips, dtype=torch.float64))
    amp = device.type == "cuda"

    def replayed(_: torch.Tensor) -> torch.Tensor:
        index = torch.randint(args.clips, (args.batch_size,))
        view = torch.randint(args.views, (args.batch_size,))
        return table.teacher_logits(view, index, table.partner[view, index],
                                    table.lam[view, index]).to(device)

    def online(teacher: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(fbank: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return teacher(fbank)
        return run

    settings: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        name: online(teacher) for name, teacher in teachers.items()}
    settings[f"replayed views (K={args.views})"] = replayed

    def step(teach: Callable[[torch.Tensor], torch.Tensor]) -> float:
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, torch.float16, enabled=amp):
            logits = student(batch)
            taught = teacher_targets(teach(batch), "bce", 1.0)
            loss = distillation_loss(logits.float(), targets, taught, "bce")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        return time.perf_counter() - start

    for teach in settings.values():
        for _ in range(args.warmup):
            step(teach)
    timings: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.runs):
        for name, teach in settings.items():
            timings[name].append(step(teach))
    speed = {name: args.batch_size / statistics.median(t) for name, t in timings.items()}
    replay = speed[f"replayed views (K={args.views})"]
    rows = [{"setting": name, "samples_per_s": value, "ratio": replay / value}
            for name, value in speed.items()]
    columns = [Column("setting", "teacher predictions"),
               Column("samples_per_s", "samples/s", "{:.2f}"),
               Column("ratio", "replay is faster by", "{:.2f}", "x")]
    console = Console(width=120)
    console.print(machine_line(device))
    console.print(rich_table(
        f"AST-{args.student} student (r={args.r}), {args.preset} shape, batch {args.batch_size}, "
        f"{device.type}, {torch.get_num_threads()} threads, median of {args.runs} interleaved "
        "steps", rows, columns))
    for name, value in speed.items():
        if not name.startswith("replayed"):
            console.print(f"replayed views vs {name}: {replay / value:.2f}x samples/s")


if __name__ == "__main__":
    main()
