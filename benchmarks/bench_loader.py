"""Data-loader throughput with and without the fbank cache, next to the tiny AST's training speed.

Prepares the demo set if needed, then times full epochs of fold 1's training split through a
DataLoader (SpecAugment on, as in training) and compares with the training throughput of the
tiny model (forward + BCEWithLogits + backward + Adam step) on batches of the same shape.
Goal: with the cache the loader delivers >= 3x what the model consumes.

    .venv/bin/python benchmarks/bench_loader.py                       # demo set, 2 workers
    .venv/bin/python benchmarks/bench_loader.py --data data/esc50 --batch-size 48
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import machine_line
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from fastast_cli import build_model
from fastast_cli.data import ASTDataset, load_manifest
from fastast_cli.data.manifest import MANIFEST_NAME, Manifest
from fastast_cli.data.prepare import prepare_demo
from fastast_cli.host_memory import keep_freed_memory
from fastast_cli.progress import set_progress


def demo_manifest(data: Path) -> Manifest:
    """The manifest at `data`, preparing the demo set there first if it is missing."""
    if not (data / MANIFEST_NAME).exists() and not data.name.endswith(".yaml"):
        prepare_demo(data)
    return load_manifest(data)


def epoch_rates(dataset: ASTDataset, workers: int, batch_size: int, epochs: int) -> list[float]:
    """Samples/s of each full epoch through one DataLoader (workers persist across epochs)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for features, _ in loader:
            count += features.shape[0]
        rates.append(count / (time.perf_counter() - start))
    return rates


def training_rate(manifest: Manifest, batch_size: int, steps: int) -> float:
    """Samples/s of the tiny AST's training steps on random fbank batches."""
    model = build_model(
        "tiny",
        manifest.num_classes,
        target_length=manifest.target_length,
        num_mel_bins=manifest.num_mel_bins,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch_size, manifest.target_length, manifest.num_mel_bins)
    y = torch.zeros(batch_size, manifest.num_classes)
    y[:, 0] = 1.0
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main() -> None:
    keep_freed_memory()  # as the fastast command does: timings match what users get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/demo"),
        help="prepared dataset (the demo set is prepared here if missing)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per loader setting (>= 2)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--freqm", type=int, default=24)
    parser.add_argument("--timem", type=int, default=48)
    args = parser.parse_args()
    set_progress(False)
    console = Console()
    console.print(machine_line("cpu"))
    manifest = demo_manifest(args.data)
    mean, std = manifest.norm_stats()
    train_file = manifest.datafile("train")

    def dataset(cache: Path | None, mixup: float = 0.0) -> ASTDataset:
        return ASTDataset(
            train_file,
            manifest.labels_csv,
            target_length=manifest.target_length,
            mean=mean,
            std=std,
            num_mel_bins=manifest.num_mel_bins,
            freqm=args.freqm,
            timem=args.timem,
            mixup=mixup,
            training=True,
            cache_dir=cache,
        )

    model_rate = training_rate(manifest, args.batch_size, args.steps)
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = epoch_rates(dataset(None), args.workers, args.batch_size, args.epochs)
        rows.append(("loader, no cache (decode + fbank every step)", statistics.median(plain[1:])))
        cached = epoch_rates(
            dataset(Path(tmp) / "fbank"), args.workers, args.batch_size, args.epochs
        )
        rows.append(("loader, fbank cache, first epoch (fills it)", cached[0]))
        rows.append(("loader, fbank cache, later epochs", statistics.median(cached[1:])))
        mixed = epoch_rates(
            dataset(Path(tmp) / "mix", mixup=0.5), args.workers, args.batch_size, args.epochs
        )
        rows.append(
            ("loader, mixup 0.5 + waveform cache, later epochs", statistics.median(mixed[1:]))
        )
    rows.append(("tiny AST training step (fwd + BCE + bwd + Adam)", model_rate))

    table = Table(
        title=f"{manifest.dataset}: {len(dataset(None))} clips, T={manifest.target_length},"
        f" batch {args.batch_size}, {args.workers} workers, "
        f"{torch.get_num_threads()} torch threads"
    )
    table.add_column("what")
    table.add_column("samples/s", justify="right")
    table.add_column("× model", justify="right")
    for name, rate in rows:
        table.add_row(
            name, f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}", f"{rate / model_rate:.1f}"
        )
    console.print(table)
    warm = rows[2][1] / model_rate
    verdict = "[green]met[/]" if warm >= 3 else "[red]missed[/]"
    console.print(
        f"goal (cached loader >= 3x the model's training throughput): {verdict} ({warm:.1f}x)"
    )


if __name__ == "__main__":
    main()
