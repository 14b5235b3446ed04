"""Accuracy and speed across merging rates r, for one or several trained runs (Tables 1 and 2).

A run is a name and a checkpoint. The checkpoint may hold `{r}` (one checkpoint per r: models
trained with merging, FastAST Train+Inf) and `{fold}` (one per cross-validation fold: metrics
are averaged, mean ± std). Without `{r}` the same weights are evaluated at every r (FastAST Inf).

A sweep is planned, measured, then written (by the caller, row by row, so that an interrupted
sweep loses nothing):
- `plan_sweep`: the steps runs × r (each scored over every fold, on every backend) minus those
  whose rows an earlier sweep's table already holds;
- `SweepMeasurement`: reads each run's checkpoints once, checks them and the clips they will be
  scored on, names the metric, times every run at every r of the plan in one interleaved loop
  (evaluation.throughput), then yields the rows step by step.

A step is one run at one r; a further dimension of the table (e.g. a token-reduction method,
runs × methods × r × folds) is a field of `SweepStep`, a loop of `plan_sweep` and a part of
`merging_key`: its steps are timed in the same loop against the same r = 0 reference.

Throughput is measured on random input of the model's shape and depends only on what
`speed_key` holds: the architecture, and how it merges when r > 0. Runs with the same key share
one measurement, and every run of one architecture shares one r = 0 reference (at r = 0 no
merging setting changes the model), so their speedups are comparable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn

from fastast_cli.data.checks import check_datafile
from fastast_cli.data.manifest import Manifest
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.evaluate import (
    check_labels,
    evaluate_model,
    mean_and_std,
    scored_fold,
)
from fastast_cli.evaluation.sweep_table import (  # noqa: F401 (the sweep's rows, re-exported)
    SweepRow,
    SweepTable,
    read_rows,
    read_table,
    recommend,
)
from fastast_cli.evaluation.throughput import (
    ThroughputRow,
    default_batch_size,
    sweep_throughputs,
)
from fastast_cli.export.backends import make_forward
from fastast_cli.models.classifiers import load_classifier


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


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep loads, scores and times its runs.

    folds: the folds of `{fold}` checkpoints (None: one checkpoint); split: the split scored
    (None: the dataset's reporting split, `Manifest.eval_split`); batch_size: the timing batch
    (None: `default_batch_size`, filling the device); schedule, proportional_attention: override
    each checkpoint's merging settings when given; warmup, runs: untimed and timed passes per
    setting; backends: each r is scored and timed on each (export.backends).
    """

    folds: tuple[int | None, ...] = (None,)
    split: str | None = None
    batch_size: int | None = None
    eval_batch_size: int = 32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: str = "auto"
    schedule: str | None = None
    proportional_attention: bool | None = None
    warmup: int = 2
    runs: int = 5
    backends: tuple[str, ...] = ("torch",)

    def load(self, path: str) -> nn.Module:
        """The checkpoint at `path` with its merging settings (overridden by the options'),
        refused unless its model merges tokens."""
        model = load_classifier(path, device=self.device, schedule=self.schedule,
                                proportional_attention=self.proportional_attention)
        if not getattr(model, "merges_tokens", False):
            raise FastASTError(f"{path}: token merging sweeps need an AST checkpoint")
        return model


@dataclass(frozen=True)
class SweepStep:
    """One run at one r: a row per backend, its metric averaged over the folds."""

    run: SweepRun
    r: int


def backend_run_name(name: str, backend: str, backends: Sequence[str]) -> str:
    """A run's name in the table: itself on the torch backend alone, else `name (backend)`."""
    return name if list(backends) == ["torch"] else f"{name} ({backend})"


@dataclass
class SweepPlan:
    """What a sweep measures: `steps` (run by run, r by r), and the `rows` it keeps from an
    earlier sweep's table (scored on the same split) with that table's `metric` name."""

    runs: list[SweepRun]
    rs: list[int]
    split: str
    backends: tuple[str, ...]
    steps: list[SweepStep]
    rows: list[SweepRow]
    metric: str | None = None

    def row_names(self, run: SweepRun) -> list[str]:
        """The names of `run`'s rows, one per backend."""
        return [backend_run_name(run.name, backend, self.backends) for backend in self.backends]

    def ordered(self, rows: Sequence[SweepRow]) -> list[SweepRow]:
        """`rows` as the table shows them: run by run (backend by backend), then by r."""
        order = {name: index for index, name in
                 enumerate(name for run in self.runs for name in self.row_names(run))}
        return sorted(rows, key=lambda row: (order[row.run], row.r))

    @property
    def row_count(self) -> int:
        """Rows of the finished table: kept and measured."""
        return len(self.rows) + len(self.steps) * len(self.backends)


def plan_sweep(
    runs: Sequence[SweepRun], rs: Sequence[int], manifest: Manifest, options: SweepOptions,
    table: SweepTable | None = None,
) -> SweepPlan:
    """The steps runs × `rs` that `table` (an earlier sweep, maybe interrupted) lacks. A step
    is done when its row on every backend is there, scored on the same split; the rows of
    steps not done are dropped (measured again)."""
    if len({run.name for run in runs}) < len(runs):
        raise FastASTError("two --checkpoint runs share a name: name them, e.g. kd=PATH")
    split = options.split or manifest.eval_split
    plan = SweepPlan(list(runs), list(rs), split, tuple(options.backends), [], [],
                     table.metric if table is not None else None)
    earlier = [row for row in (table.rows if table is not None else []) if row.split == split]
    for run in runs:
        names = plan.row_names(run)
        for r in rs:
            held = [row for row in earlier if row.run in names and row.r == r]
            if len({row.run for row in held}) == len(names):
                plan.rows += held
            else:
                plan.steps.append(SweepStep(run, r))
    plan.rows = plan.ordered(plan.rows)
    return plan


def metric_name(model: nn.Module, manifest: Manifest) -> str:
    """The run's headline metric: the checkpoint's own, else mAP for AudioSet, accuracy else."""
    chosen = (getattr(model, "meta", {}) or {}).get("metric")
    if chosen in ("accuracy", "mAP"):
        return chosen
    return "mAP" if manifest.dataset == "audioset" else "accuracy"


def architecture(model: nn.Module) -> str:
    """What decides a model's speed without merging: its architecture and its config without
    the label names. Two models with the same key run at the same samples/s at r = 0."""
    config = {f.name: getattr(model.config, f.name) for f in fields(model.config)
              if f.name != "labels"}
    return repr((model.architecture, config))


def merging_key(model: nn.Module) -> str:
    """What decides a model's samples/s when it merges (r > 0): its `architecture` and how it
    merges (its token-reduction method, schedule, proportional attention)."""
    settings = model.merge_settings
    return repr((architecture(model), model.reduction.name, settings.schedule,
                 settings.proportional_attention))


def speed_key(model: nn.Module, r: int) -> str:
    """What decides a model's samples/s at merging rate `r`: its `merging_key`, or at r = 0,
    where every merging setting runs the same model, its `architecture` alone (runs of one
    architecture share their r = 0 measurement)."""
    return architecture(model) if r == 0 else merging_key(model)


class SweepMeasurement:
    """The measuring side of a `SweepPlan`: each checkpoint read once, its labels and scored
    clips checked before any timing, the metric named before the first row (the earlier
    table's, else the first run's: every row of a table holds the same metric), and all
    timing in one interleaved loop. `rows()` yields the plan's rows step by step; `notes`
    collects what a reader of the metric must know (classes left out of mAP)."""

    def __init__(self, plan: SweepPlan, manifest: Manifest, options: SweepOptions) -> None:
        self.plan, self.manifest, self.options = plan, manifest, options
        self.notes: set[str] = set()
        self.models: dict[tuple[str, int | None], nn.Module] = {}
        self.references = {run.name: reference_metric(plan, run) for run in plan.runs}
        for run in dict.fromkeys(step.run for step in plan.steps):
            for fold in options.folds:
                self.models[run.name, fold] = self.checked(run, plan.rs[0], fold)
        self.metric = plan.metric or metric_name(self.first_model(), manifest)

    def first_model(self) -> nn.Module:
        """A model whose checkpoint names the metric: the first loaded, else the first run's."""
        if self.models:
            return next(iter(self.models.values()))
        return self.options.load(self.plan.runs[0].path(self.plan.rs[0], self.options.folds[0]))

    def checked(self, run: SweepRun, r: int, fold: int | None) -> nn.Module:
        """The checkpoint of `run` at `r` and `fold`, refused unless it predicts the dataset's
        classes and the clips it is scored on exist and have labels."""
        path = run.path(r, fold)
        model = self.options.load(path)
        check_labels(model, self.manifest, path)
        scored = fold if fold is not None else scored_fold(model, self.manifest, None, path)
        check_datafile(self.manifest.datafile(self.plan.split, scored), self.plan.split)
        return model

    def model(self, run: SweepRun, r: int, fold: int | None) -> nn.Module:
        """The model `run` is scored with at `r` on `fold`: its own checkpoint per r for a
        `{r}` run (rs[0]'s read beforehand), else the one checkpoint."""
        if run.per_r and r != self.plan.rs[0]:
            return self.checked(run, r, fold)
        return self.models[run.name, fold]

    def rows(self) -> Iterator[SweepRow]:
        """Time every step (one loop), then score the steps in order and yield their rows."""
        if not self.plan.steps:
            return
        speeds, batch_size = self.timed()
        for index, step in enumerate(self.plan.steps):
            yield from self.scored(step, speeds[step], batch_size)
            if all(later.run != step.run for later in self.plan.steps[index + 1:]):
                for fold in self.options.folds:  # done with the run: free its models
                    self.models.pop((step.run.name, fold), None)

    def timed(self) -> tuple[dict[SweepStep, dict[str, ThroughputRow]], int]:
        """Throughput of each step per backend (speedups relative to its architecture's rs[0]
        on the first backend), all steps timed in one interleaved loop, and the timing batch.
        One model per `merging_key` is timed (r = 0 once per architecture), with its
        checkpoint's schedule unless the options give one."""
        options, rs, backends = self.options, self.plan.rs, self.plan.backends
        timers: dict[str, tuple[nn.Module, list[int]]] = {}  # merging_key → model, its r
        timed: set[tuple[str, int]] = set()  # (speed key, r) with a timer
        for step in self.plan.steps:
            model = self.models[step.run.name, options.folds[0]]
            for r in (rs[0], step.r):
                if (speed_key(model, r), r) not in timed:
                    timed.add((speed_key(model, r), r))
                    timers.setdefault(merging_key(model), (model, []))[1].append(r)
        models = [model for model, _ in timers.values()]
        batch_size = options.batch_size or default_batch_size(
            models[0], options.device, options.dtype, rs[0], models[0].merge_settings.schedule)
        measured = sweep_throughputs(
            models, [timed_rs for _, timed_rs in timers.values()], batch_size=batch_size,
            device=options.device, dtype=options.dtype,
            schedule=[model.merge_settings.schedule for model in models],
            warmup=options.warmup, runs=options.runs, backends=backends,
        )
        by_setting = {(speed_key(model, row.r), row.backend, row.r): row
                      for model, rows in zip(models, measured, strict=True) for row in rows}
        speeds: dict[SweepStep, dict[str, ThroughputRow]] = {}
        for step in self.plan.steps:
            model = self.models[step.run.name, options.folds[0]]
            reference = by_setting[speed_key(model, rs[0]), backends[0], rs[0]]
            speeds[step] = {
                backend: relative_to(by_setting[speed_key(model, step.r), backend, step.r],
                                     reference)
                for backend in backends}
        return speeds, batch_size

    def scored(self, step: SweepStep, speed: dict[str, ThroughputRow], batch_size: int
               ) -> Iterator[SweepRow]:
        """The rows of `step`, one per backend: its metric over the folds, the drop from the
        run's rs[0] metric, and its throughput."""
        run, r, options = step.run, step.r, self.options
        values: dict[str, list[float]] = {backend: [] for backend in self.plan.backends}
        for fold in options.folds:
            model = self.model(run, r, fold)
            settings = model.merge_settings.overridden(r=r)
            settings.apply(model)
            for backend in self.plan.backends:
                evaluation = evaluate_model(
                    model, self.manifest, run.path(r, fold), split=self.plan.split, fold=fold,
                    batch_size=options.eval_batch_size, device=options.device,
                    forward=make_forward(model, backend))
                values[backend].append(evaluation.metrics.summary()[self.metric])
            if self.metric == "mAP":
                self.notes.update(evaluation.notes())
        for backend in self.plan.backends:
            mean, std = mean_and_std(values[backend])
            if self.references[run.name] is None:
                self.references[run.name] = mean
            timing = speed[backend]
            yield SweepRow(
                backend_run_name(run.name, backend, self.plan.backends), r, mean,
                std if len(options.folds) > 1 else None, mean - self.references[run.name],
                timing.samples_per_s, timing.speedup, timing.tokens, timing.gflops,
                run.path(r, options.folds[0]), self.plan.split, batch_size,
                settings.attention_line())


def reference_metric(plan: SweepPlan, run: SweepRun) -> float | None:
    """The metric drops of `run` are relative to: its first backend's row at rs[0] when the
    plan keeps it (None: measured first)."""
    first_name = plan.row_names(run)[0]
    return next((row.metric for row in plan.rows
                 if row.run == first_name and row.r == plan.rs[0]), None)


def relative_to(row: ThroughputRow, reference: ThroughputRow) -> ThroughputRow:
    """`row` with its speedups relative to `reference` (samples/s and GFLOPs)."""
    return replace(row, speedup=row.samples_per_s / reference.samples_per_s,
                   flop_speedup=reference.gflops / row.gflops)

