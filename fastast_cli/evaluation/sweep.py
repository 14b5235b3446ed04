"""Accuracy and speed across merging rates r, for one or several trained runs (Tables 1 and 2).

A run is a name and a checkpoint. The checkpoint may hold `{r}` (one checkpoint per r: models
trained with merging, FastAST Train+Inf) and `{fold}` (one per cross-validation fold: metrics
are averaged, mean ± std). Without `{r}` the same weights are evaluated at every r (FastAST Inf).

Each row joins the metric measured on the dataset with throughput measured on random input of
the model's shape (interleaved timing, see evaluation.throughput); throughput depends only on
the architecture and r, so it is measured once per architecture and r: the runs of a sweep are
timed together in one interleaved loop, with one reference r per architecture, and runs of
identical architectures share one measurement (they report the same samples/s). Finished rows
are handed to `on_row` at once so that the caller can save them: an interrupted sweep loses
nothing.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from fastast_cli.data.checks import check_datafile
from fastast_cli.data.manifest import Manifest
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.evaluate import (
    check_labels,
    evaluate_model,
    mean_and_std,
    scored_fold,
)
from fastast_cli.evaluation.throughput import (
    ThroughputRow,
    default_batch_size,
    sweep_throughputs,
)
from fastast_cli.export.backends import make_forward
from fastast_cli.models.ast import AST
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.elastic import ElasticAST


@dataclass(frozen=True)
class SweepRun:
    """A named checkpoint (pattern) to sweep."""

    name: str
    checkpoint: str

    @property
    def per_r(self) -> bool:
        return "{r}" in self.checkpoint

    def path(self, r: int, fold: int | None) -> str:
        return self.checkpoint.replace("{r}", str(r)).replace("{fold}", str(fold))


@dataclass
class SweepRow:
    """One run at one r: its metric (mean over folds), the drop from r = 0, and its speed."""

    run: str
    r: int
    metric: float
    metric_std: float | None  # standard deviation over folds; None for a single fold
    drop: float
    samples_per_s: float
    speedup: float
    tokens: int
    gflops: float
    checkpoint: str
    split: str
    batch: int  # timing batch of samples_per_s
    merging: str  # schedule and proportional attention the metric was measured with

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def parse_run(spec: str) -> SweepRun:
    """`name=path` or a bare path (named after its folder; an existing file's path may hold
    `=`)."""
    name, sep, path = spec.partition("=")
    if not sep or Path(spec).is_file():
        path = spec
        parts = [p for p in re.split(r"[\\/]", spec) if p]
        name = parts[-2] if len(parts) >= 2 else parts[-1] if parts else spec
    if not name or not path:
        raise FastASTError(f"--checkpoint {spec!r}: use name=path or a path")
    return SweepRun(name, path)


def metric_name(model: torch.nn.Module, manifest: Manifest) -> str:
    """The run's headline metric: the checkpoint's own, else mAP for AudioSet, accuracy else."""
    chosen = (getattr(model, "meta", {}) or {}).get("metric")
    if chosen in ("accuracy", "mAP"):
        return chosen
    return "mAP" if manifest.dataset == "audioset" else "accuracy"


def architecture(model: AST | ElasticAST) -> str:
    """What decides a model's speed: its class, its config without the label names, and
    proportional attention. Two models with the same key run at the same samples/s."""
    config = {f.name: getattr(model.config, f.name) for f in fields(model.config)
              if f.name != "labels"}
    return repr((type(model).__name__, config, getattr(model, "proportional_attention", None)))


def load_sweepable(path: str, device: torch.device, **merging: Any) -> AST | ElasticAST:
    """The checkpoint at `path` with its merging settings (`merging` overrides them: schedule,
    proportional_attention), refused unless it is an AST (merging needs one)."""
    model = load_classifier(path, device=device, **merging)
    if not isinstance(model, AST | ElasticAST):
        raise FastASTError(f"{path}: token merging sweeps need an AST checkpoint")
    return model


def measure_runs(
    todo: dict[SweepRun, list[int]],
    rs: Sequence[int],
    *,
    fold: int | None = None,
    batch_size: int | None = None,
    device: torch.device | None = None,
    dtype: str = "auto",
    schedule: str | None = None,
    proportional_attention: bool | None = None,
    warmup: int = 2,
    runs: int = 5,
    on_step: Callable[[], None] | None = None,
    backends: Sequence[str] = ("torch",),
    check: Callable[[SweepRun, AST | ElasticAST], None] | None = None,
) -> tuple[dict[str, dict[tuple[str, int], ThroughputRow]], int]:
    """Throughput of each run at rs[0] and at the r values it still needs (`todo`) on each of
    `backends`, keyed by run name then (backend, r), and the timing batch used. One model per
    architecture is timed, with its checkpoint's schedule unless `schedule` is given; all
    architectures, backends and r values in one interleaved loop, speedups relative to the
    first backend at rs[0] of the same architecture. `batch_size`: the timing batch (default:
    `default_batch_size` of the first model, filling the device). `check`: gets each run and
    its loaded model before any timing (e.g. to check the clips it will be scored on)."""
    device = device or torch.device("cpu")
    merging = {"schedule": schedule, "proportional_attention": proportional_attention}
    models: dict[str, AST | ElasticAST] = {}
    wanted: dict[str, list[int]] = {}
    owner: dict[str, str] = {}
    for run, missing in todo.items():
        model = load_sweepable(run.path(rs[0], fold), device, **merging)
        if check is not None:
            check(run, model)
        key = repr((architecture(model), model.merge_settings.schedule))
        models.setdefault(key, model)
        owner[run.name] = key
        wanted.setdefault(key, [rs[0]])
        wanted[key] += [r for r in missing if r not in wanted[key]]
    keys = list(models)
    first = models[keys[0]]
    batch_size = batch_size or default_batch_size(
        first, device, dtype, rs[0], first.merge_settings.schedule
    )
    measured = sweep_throughputs(
        [models[key] for key in keys], [wanted[key] for key in keys], batch_size=batch_size,
        device=device, dtype=dtype, schedule=[models[key].merge_settings.schedule for key in keys],
        warmup=warmup, runs=runs, on_step=on_step, backends=backends,
    )
    speed = {key: {(row.backend, row.r): row for row in rows}
             for key, rows in zip(keys, measured, strict=True)}
    return {name: speed[key] for name, key in owner.items()}, batch_size


def sweep_run(
    run: SweepRun,
    rs: Sequence[int],
    manifest: Manifest,
    *,
    folds: Sequence[int | None] = (None,),
    split: str | None = None,
    done: Collection[int] = (),
    reference_metric: float | None = None,
    batch_size: int | None = None,
    eval_batch_size: int = 32,
    device: torch.device | None = None,
    dtype: str = "auto",
    schedule: str | None = None,
    proportional_attention: bool | None = None,
    warmup: int = 2,
    runs: int = 5,
    on_row: Callable[[SweepRow], None] | None = None,
    on_step: Callable[[], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    backends: Sequence[str] = ("torch",),
    speed: dict[tuple[str, int], ThroughputRow] | None = None,
) -> tuple[list[SweepRow], str]:
    """Sweep one run over `rs`, skipping the r values in `done`; returns new rows and metric name.

    The metric is scored on `split` (default: the dataset's reporting split, test where it has
    one; see `Manifest.eval_split`). The schedule and proportional attention are the
    checkpoint's (`MergeSettings`) unless `schedule` / `proportional_attention` are given.

    `on_note`: gets what a reader of the metric must know (classes left out of mAP).
    `batch_size`: the timing batch (default: `default_batch_size`, filling the device).
    `reference_metric`: the run's r = rs[0] metric from an earlier, interrupted sweep (drops are
    relative to it when that row is among `done`). Each r is evaluated and timed on each of
    `backends` (timing interleaved); rows are named with `backend_run_name`. `speed`: the run's
    throughput per (backend, r) measured beforehand (`measure_runs`); measured here when not
    given.
    """
    device = device or torch.device("cpu")
    split = split or manifest.eval_split
    todo = [r for r in rs if r not in done]
    if not todo:
        return [], ""
    merging = {"schedule": schedule, "proportional_attention": proportional_attention}
    models = {fold: load_sweepable(run.path(rs[0], fold), device, **merging) for fold in folds}
    first = next(iter(models.values()))
    for fold, model in models.items():
        check_labels(model, manifest, run.path(rs[0], fold))
    metric = metric_name(first, manifest)
    if speed is None or batch_size is None:
        measured, batch_size = measure_runs(
            {run: todo}, rs, fold=folds[0], batch_size=batch_size, device=device, dtype=dtype,
            warmup=warmup, runs=runs, on_step=on_step, backends=backends, **merging,
        )
        speed = measured[run.name]
    rows: list[SweepRow] = []
    for r in todo:
        values: dict[str, list[float]] = {backend: [] for backend in backends}
        for fold in folds:
            model = (load_classifier(run.path(r, fold), device=device, **merging) if run.per_r
                     else models[fold])
            assert isinstance(model, AST | ElasticAST)
            settings = model.merge_settings.overridden(r=r)
            settings.apply(model)
            for backend in backends:
                evaluation = evaluate_model(model, manifest, run.path(r, fold), split=split,
                                            fold=fold, batch_size=eval_batch_size, device=device,
                                            forward=make_forward(model, backend))
                values[backend].append(evaluation.metrics.summary()[metric])
            if on_note is not None and metric == "mAP":
                for note in evaluation.notes():
                    on_note(note)
        for backend in backends:
            mean, std = mean_and_std(values[backend])
            if reference_metric is None:
                reference_metric = mean
            timing = speed[backend, r]
            spread = std if len(folds) > 1 else None
            row = SweepRow(backend_run_name(run.name, backend, backends), r, mean, spread,
                           mean - reference_metric, timing.samples_per_s, timing.speedup,
                           timing.tokens, timing.gflops, run.path(r, folds[0]), split,
                           batch_size, settings.attention_line())
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows, metric


def backend_run_name(name: str, backend: str, backends: Sequence[str]) -> str:
    """A run's name in the table: itself on the torch backend alone, else `name (backend)`."""
    return name if list(backends) == ["torch"] else f"{name} ({backend})"


# The options of `sweep_run` that decide how throughput is measured.
TIMING_OPTIONS = ("batch_size", "device", "dtype", "schedule", "proportional_attention",
                  "warmup", "runs", "on_step", "backends")


def run_sweep(
    checkpoints: Sequence[SweepRun],
    rs: Sequence[int],
    manifest: Manifest,
    *,
    previous: Sequence[SweepRow] = (),
    split: str | None = None,
    on_rows: Callable[[list[SweepRow]], None] | None = None,
    **options: Any,
) -> tuple[list[SweepRow], str]:
    """Sweep every run in `checkpoints` over `rs` (`options` go to `sweep_run`), keeping the
    rows of an earlier sweep (`previous`, those scored on the same `split`) and measuring only
    what they lack. After each new row
    `on_rows` gets all rows so far, ordered by run then r (save them there). Returns those rows
    and the metric's name.
    """
    backends = options.get("backends", ("torch",))
    names = {run.name: [backend_run_name(run.name, b, backends) for b in backends]
             for run in checkpoints}
    if len(names) < len(checkpoints):
        raise FastASTError("two --checkpoint runs share a name: name them, e.g. kd=PATH")
    order = {name: index for index, name in enumerate(n for ns in names.values() for n in ns)}
    split = split or manifest.eval_split
    rows = [row for row in previous if row.run in order and row.split == split]
    metric = "metric"
    for _ in rows:  # finished rows count as progress too
        if on_rows is not None:
            on_rows(rows)

    def keep(row: SweepRow) -> None:
        rows.append(row)
        rows.sort(key=lambda row: (order[row.run], row.r))
        if on_rows is not None:
            on_rows(rows)

    done: dict[SweepRun, set[int]] = {}
    for run in checkpoints:  # an r is done when every backend's row is there
        mine = [row for row in rows if row.run in names[run.name]]
        done[run] = {r for r in rs
                     if len({row.run for row in mine if row.r == r}) == len(backends)}
        rows[:] = [row for row in rows if row.run not in names[run.name] or row.r in done[run]]
    todo = {run: [r for r in rs if r not in done[run]] for run in checkpoints}
    todo = {run: missing for run, missing in todo.items() if missing}
    timing = {key: options[key] for key in TIMING_OPTIONS if key in options}
    folds = options.get("folds", (None,))

    def check_scored_clips(run: SweepRun, model: AST | ElasticAST) -> None:
        """Before timing: the clips `run` will be scored on exist and have labels."""
        for fold in folds:
            scored = fold if fold is not None else scored_fold(model, manifest, None,
                                                               run.path(rs[0], fold))
            check_datafile(manifest.datafile(split, scored), split)

    speeds, batch_size = (measure_runs(todo, rs, fold=folds[0], check=check_scored_clips,
                                       **timing) if todo else ({}, None))
    for run in todo:
        reference = next((row.metric for row in rows
                          if row.run in names[run.name] and row.r == rs[0]), None)
        _, name = sweep_run(run, rs, manifest, split=split, done=done[run],
                            reference_metric=reference, on_row=keep, speed=speeds[run.name],
                            **{**options, "batch_size": batch_size})
        metric = name or metric
    return rows, metric


def read_rows(path: Path) -> list[SweepRow]:
    """Rows of an earlier (maybe interrupted) sweep written as CSV to `path`; none if absent."""
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as stream:
        for record in csv.DictReader(stream):
            try:
                rows.append(SweepRow(
                    run=record["run"], r=int(record["r"]), metric=float(record["metric"]),
                    metric_std=float(record["metric_std"]) if record["metric_std"] else None,
                    drop=float(record["drop"]),
                    samples_per_s=float(record["samples_per_s"]),
                    speedup=float(record["speedup"]), tokens=int(record["tokens"]),
                    gflops=float(record["gflops"]), checkpoint=record["checkpoint"],
                    split=record.get("split", ""),  # older tables: split unknown, re-measured
                    batch=int(record.get("batch") or 0),
                    merging=record.get("merging") or "",  # older tables: not recorded
                ))
            except (KeyError, ValueError):
                raise FastASTError(
                    f"{path} is not a sweep table of this kind: remove it or pick another --out"
                ) from None
            if not 0 < rows[-1].samples_per_s < math.inf:  # speeds are divided by
                raise FastASTError(
                    f"{path}: run {rows[-1].run!r} at r = {rows[-1].r} has samples_per_s "
                    f"{record['samples_per_s']!r}, not a measured speed")
    return rows


def recommend(rows: Sequence[SweepRow], budget: str) -> SweepRow | None:
    """The row with the smallest drop whose speed meets `budget`: samples/s (`120`) or a
    speedup over r = 0 (`1.5x`). None when no row meets it."""
    text = budget.strip().lower()
    try:
        wanted = float(text.rstrip("x"))
    except ValueError:
        raise FastASTError(
            f"--budget {budget!r}: give samples/s (120) or a speedup (1.5x)"
        ) from None
    key = "speedup" if text.endswith("x") else "samples_per_s"
    meeting = [row for row in rows if getattr(row, key) >= wanted]
    if not meeting:
        return None
    return max(meeting, key=lambda row: (row.drop, row.samples_per_s))
