"""Accuracy and speed across merging rates r, for one or several trained runs (Tables 1 and 2).

A run is a name and a checkpoint. The checkpoint may hold `{r}` (one checkpoint per r: models
trained with merging, FastAST Train+Inf) and `{fold}` (one per cross-validation fold: metrics
are averaged, mean ± std). Without `{r}` the same weights are evaluated at every r (FastAST Inf).

A sweep is planned, measured, then written (by the caller, row by row, so that an interrupted
sweep loses nothing):
- `plan_sweep`: the steps runs × methods × r (each scored over every fold, on every backend)
  minus those whose rows an earlier sweep's table already holds; r = 0 is one step per run
  (method `none`): no method reduces a token there, so every method shares that reference;
- `SweepMeasurement`: checks every checkpoint and the clips it will be scored on, names the
  metric, times every run at every r of the plan in one interleaved loop (evaluation.throughput,
  one model per run), then yields the rows step by step, holding one run's folds at a time.

A resumed sweep keeps the metric of the rows it holds (scoring is the slow part) but times
them again in its own loop, with the steps it measures (`SweepMeasurement.retimed`): samples/s
of one machine state are not comparable with another's, so every samples/s and speedup of a
table comes from one timing loop, and every speedup divides by the r = 0 timing of that loop.
(Only where a kept run's checkpoint is gone are its rows' timings kept, with a note.)

A step is one run with one token-reduction method at one r. Each method runs on a view of the
run's loaded model (`method_view`: the same model, with that method's merging record swapped in
while it runs; nothing copied, the model's own record untouched), so a run's
checkpoint is loaded once whatever the number of methods (a `{r}` run's checkpoints: once per
method, when scored), and every method is timed in one loop against one r = 0 reference.

Throughput is measured on random input of the model's shape (a fixed AST pads every clip to
it) and depends only on what `speed_key` holds: the architecture, and how it merges when r > 0.
An ElasticAST is timed instead on clips of the scored split at their real lengths, packed as in
evaluation (`real_length_clips`), so what not padding saves shows beside the padded fixed AST;
its tokens and FLOPs are the mean per clip. Runs with the same key share one measurement, and
every run of one architecture shares one r = 0 reference (at r = 0 no merging setting changes
the model), so their speedups are comparable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from fastast_cli.data.checks import check_datafile
from fastast_cli.data.dataset import NativeLengthDataset
from fastast_cli.data.manifest import Manifest
from fastast_cli.devices import device_label
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.evaluate import (
    check_labels,
    evaluate_model,
    headline_metric,
    input_spec_on,
    mean_and_std,
    scored_fold,
)
from fastast_cli.evaluation.sweep_table import NO_METHOD, SweepRow, SweepTable, method_of
from fastast_cli.evaluation.throughput import (
    ThroughputRow,
    default_batch_size,
    merging_key,
    speed_key,
    sweep_throughputs,
)
from fastast_cli.inference.backends import make_forward
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.reduction.settings import MergingView, merging_as, model_and_merging
from fastast_cli.progress import task


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


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep loads, scores and times its runs.

    folds: the folds of `{fold}` checkpoints (None: one checkpoint); split: the split scored
    (None: the dataset's reporting split, `Manifest.eval_split`); batch_size: the timing batch
    (None: `default_batch_size`, filling the device); schedule, proportional_attention: override
    each checkpoint's merging settings when given; warmup, runs: untimed and timed passes per
    setting; dtype: the precision every row is scored and timed in (fp32, as AST evaluates, or
    fp16/bf16 autocast); backends: each r is scored and timed on each (inference.backends);
    methods: the token-reduction methods swept (`models.reduction.METHODS`; None: each
    checkpoint's own).
    """

    folds: tuple[int | None, ...] = (None,)
    split: str | None = None
    batch_size: int | None = None
    eval_batch_size: int = 32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: str = "fp32"  # of scoring and timing alike: fp32, fp16 or bf16 (devices.DTYPES)
    schedule: str | None = None
    proportional_attention: bool | None = None
    warmup: int = 2
    runs: int = 5
    backends: tuple[str, ...] = ("torch",)
    methods: tuple[str | None, ...] = (None,)

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
    """One run with one method at one r: a row per backend, its metric averaged over the folds.
    method: a name, None for the checkpoint's own, NO_METHOD at r = 0."""

    run: SweepRun
    r: int
    method: str | None = NO_METHOD


def method_view(model: nn.Module, method: str | None) -> nn.Module | MergingView:
    """`model` reducing tokens with `method` (None, NO_METHOD: as it is, the model itself): a
    `MergingView`, the model with its record's method replaced (that method's default
    options), swapped in only while the view runs."""
    if method in (None, NO_METHOD, model.merging.method):
        return model
    return MergingView(model, model.merging.overridden(method=method))


def matches(row: SweepRow, step: SweepStep) -> bool:
    """Whether an earlier table's `row` is `step`'s (at r = 0 every method's)."""
    return row.r == step.r and step.method in (None, NO_METHOD, row.method)


def backend_run_name(name: str, backend: str, backends: Sequence[str]) -> str:
    """A run's name in the table: itself on one backend, torch or `auto` (whose pick is
    noted beside the table), else `name (backend)`."""
    return name if list(backends) in (["torch"], ["auto"]) else f"{name} ({backend})"


@dataclass
class SweepPlan:
    """What a sweep measures: `steps` (run by run, method by method, r by r), and the `rows`
    it keeps from an earlier sweep's table (scored on the same split) with that table's
    `metric` name."""

    runs: list[SweepRun]
    rs: list[int]
    split: str
    backends: tuple[str, ...]
    steps: list[SweepStep]
    rows: list[SweepRow]
    metric: str | None = None
    asked: tuple[str | None, ...] = (None,)  # the methods asked for (None: the checkpoints')

    def row_names(self, run: SweepRun) -> list[str]:
        """The names of `run`'s rows, one per backend."""
        return [backend_run_name(run.name, backend, self.backends) for backend in self.backends]

    def ordered(self, rows: Sequence[SweepRow]) -> list[SweepRow]:
        """`rows` as the table shows them: run by run (backend by backend), the r = 0 row
        first, then method by method, r by r."""
        order = {name: index for index, name in
                 enumerate(name for run in self.runs for name in self.row_names(run))}
        methods = {name: index for index, name in enumerate(self.methods)}
        return sorted(rows, key=lambda row: (
            order[row.run], -1 if row.method == NO_METHOD else methods.get(row.method, 0),
            row.r))

    @property
    def methods(self) -> list[str]:
        """The methods of the rows, in the order asked for (the checkpoints' own: as met)."""
        named = [step.method for step in self.steps if step.method != NO_METHOD]
        return list(dict.fromkeys([*(method for method in self.asked if method), *named,
                                   *(row.method for row in self.rows)]))

    def read_rs(self, run: SweepRun) -> list[int]:
        """The r whose checkpoints of `run` are read: rs[0], and every r measured of a `{r}` run."""
        measured = {step.r for step in self.steps if step.run == run and run.per_r}
        return [r for r in self.rs if r == self.rs[0] or r in measured]

    @property
    def row_count(self) -> int:
        """Rows of the finished table: kept and measured."""
        return len(self.rows) + len(self.steps) * len(self.backends)


def plan_sweep(
    runs: Sequence[SweepRun], rs: Sequence[int], manifest: Manifest, options: SweepOptions,
    table: SweepTable | None = None,
) -> SweepPlan:
    """The steps runs × methods × `rs` (methods: `options.methods`; one step per run at r = 0)
    that `table` (an earlier sweep, maybe interrupted) lacks. A step is done when its row on
    every backend is there, scored on the same split; the rows of steps not done are dropped
    (measured again)."""
    if len({run.name for run in runs}) < len(runs):
        raise FastASTError("two --checkpoint runs share a name: name them, e.g. kd=PATH")
    split = options.split or manifest.eval_split
    plan = SweepPlan(list(runs), list(rs), split, tuple(options.backends), [], [],
                     table.metric if table is not None else None, options.methods)
    earlier = [row for row in (table.rows if table is not None else []) if row.split == split]
    for run in runs:
        names = plan.row_names(run)
        for method in options.methods:
            for r in rs:
                step = SweepStep(run, r, NO_METHOD if r == 0 else method)
                if step.r == 0 and step in plan.steps:
                    continue  # one r = 0 step per run, whatever the methods
                held = [row for row in earlier if row.run in names and matches(row, step)]
                if len({row.run for row in held}) == len(names):
                    plan.rows += [row for row in held if row not in plan.rows]
                else:
                    plan.steps.append(step)
    plan.rows = plan.ordered(plan.rows)
    return plan


class SweepMeasurement:
    """The measuring side of a `SweepPlan`: every checkpoint's labels and scored clips checked
    before any timing (folds after the first are read again when scored), the metric named
    before the first row (the earlier table's, else the first run's: every row of a table
    holds the same metric), and all timing in one interleaved loop. `rows()` yields the plan's
    rows step by step; `notes` collects what a reader of the metric must know (classes left
    out of mAP)."""

    def __init__(self, plan: SweepPlan, manifest: Manifest, options: SweepOptions) -> None:
        self.plan, self.manifest, self.options = plan, manifest, options
        self.notes: set[str] = set()
        self.timing_input = "random input"  # what the timed batches were, for the table title
        # (run name, fold) → its rs[0] model: folds[0] of every run (timed), until the run is
        # scored; the other folds only while their run is scored (read again then).
        self.models: dict[tuple[str, int | None], nn.Module] = {}
        self.references = {(step.run.name, self.reference_method(step.method)):
                           reference_metric(plan, step.run, self.reference_method(step.method))
                           for step in plan.steps}
        self.datafiles: set[Path] = set()  # datafiles checked (clips there, labelled)
        for run in dict.fromkeys(step.run for step in plan.steps):
            for r, fold in ((r, fold) for r in plan.read_rs(run) for fold in options.folds):
                model = self.checked(run, r, fold)  # every checkpoint checked before timing
                if (r, fold) == (plan.rs[0], options.folds[0]):
                    self.models[run.name, fold] = model
        self.metric = plan.metric or headline_metric(self.first_model(), manifest)
        self.kept = self._kept_steps() if plan.steps else []
        self._timing: tuple[dict[SweepStep, dict[str, ThroughputRow]], int] | None = None

    def _kept_steps(self) -> list[tuple[SweepRow, SweepStep, str]]:
        """The plan's kept rows, each with its step and backend, to be timed again; a run's
        rs[0] model is loaded for it (rows of a run whose checkpoint is gone keep their
        earlier timing, with a note)."""
        fold = self.options.folds[0]
        kept = []
        for row in self.plan.rows:
            found = [(run, backend) for run in self.plan.runs for backend in self.plan.backends
                     if backend_run_name(run.name, backend, self.plan.backends) == row.run]
            if not found:
                continue
            run, backend = found[0]
            if (run.name, fold) not in self.models:
                try:
                    self.models[run.name, fold] = self.options.load(
                        run.path(self.plan.rs[0], fold))
                except FastASTError as error:
                    self.notes.add(f"{run.name}: its earlier rows keep their earlier timing "
                                   f"(not comparable with this run's): {error}")
                    continue
            kept.append((row, SweepStep(run, row.r, row.method), backend))
        return kept

    def retimed(self) -> list[SweepRow]:
        """The kept rows with samples/s, speedup, tokens, GFLOPs and timing batch from this
        sweep's timing loop (the one the new rows get theirs from); the rows as they are when
        nothing is left to measure."""
        if not self.kept:
            return list(self.plan.rows)
        speeds, batch_size = self.timed_once()
        again = {id(row): (step, backend) for row, step, backend in self.kept}
        rows = []
        for row in self.plan.rows:
            if id(row) not in again:
                rows.append(row)
                continue
            step, backend = again[id(row)]
            timing = speeds[step][backend]
            rows.append(replace(row, samples_per_s=timing.samples_per_s, speedup=timing.speedup,
                                tokens=timing.tokens, gflops=timing.gflops, batch=batch_size,
                                spread_pct=timing.spread_pct,
                                device=device_label(self.options.device),
                                dtype=ran_dtype(backend, self.options.dtype),
                                threads=torch.get_num_threads()))
        return rows

    def timed_once(self) -> tuple[dict[SweepStep, dict[str, ThroughputRow]], int]:
        """`timed()`, run once per sweep; models of runs kept whole are freed after it."""
        if self._timing is None:
            self._timing = self.timed()
            measured = {step.run.name for step in self.plan.steps}
            for name, fold in list(self.models):
                if name not in measured:
                    del self.models[name, fold]
        return self._timing

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
        datafile = self.manifest.datafile(self.plan.split, scored)
        if datafile not in self.datafiles:
            check_datafile(datafile, self.plan.split)
            self.datafiles.add(datafile)
        return model

    def reference_method(self, method: str | None) -> str | None:
        """The method of the row a step's drop is against: the shared r = 0 row's when the
        sweep starts at r = 0, else the step's own method at the first r."""
        return NO_METHOD if self.plan.rs[0] == 0 else method

    def model(self, run: SweepRun, r: int, fold: int | None,
              method: str | None = NO_METHOD) -> nn.Module | MergingView:
        """The model `run` is scored with at `r` on `fold` with `method`: its own checkpoint
        per r for a `{r}` run, else the one checkpoint (kept until the run is scored)."""
        if run.per_r and r != self.plan.rs[0]:  # checked before timing, read again now
            return method_view(self.options.load(run.path(r, fold)), method)
        if (run.name, fold) not in self.models:
            self.models[run.name, fold] = self.options.load(run.path(self.plan.rs[0], fold))
        return method_view(self.models[run.name, fold], method)

    def rows(self) -> Iterator[SweepRow]:
        """Time every step (one loop), then score the steps in order and yield their rows."""
        if not self.plan.steps:
            return
        speeds, batch_size = self.timed_once()
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
        steps = list(dict.fromkeys([*self.plan.steps, *(step for _, step, _ in self.kept)]))
        timers: dict[str, tuple[nn.Module, list[int]]] = {}  # merging_key → model, its r
        timed: set[tuple[str, int]] = set()  # (speed key, r) with a timer
        for step in steps:
            model = method_view(self.models[step.run.name, options.folds[0]], step.method)
            for r in (rs[0], step.r):
                if (speed_key(model, r), r) not in timed:
                    timed.add((speed_key(model, r), r))
                    timers.setdefault(merging_key(model), (model, []))[1].append(r)
        models = [model for model, _ in timers.values()]
        batch_size = options.batch_size or min(  # one batch that every timed model fits
            default_batch_size(model, options.device, options.dtype, rs[0],
                               model.merging.schedule) for model in models)
        timed_rs = [model_rs for _, model_rs in timers.values()]
        inputs = [self.real_clips(model, batch_size) if model.input_spec().native_length
                  else None for model in models]
        passes = sum(map(len, timed_rs)) * len(backends) * (options.warmup + options.runs)
        with task("timing", passes) as work:  # one bar per phase: its steps cost alike
            measured = sweep_throughputs(
                models, timed_rs, batch_size=batch_size,
                device=options.device, dtype=options.dtype,
                schedule=[model.merging.schedule for model in models],
                warmup=options.warmup, runs=options.runs, backends=backends, inputs=inputs,
                on_step=work.advance,
            )
        by_setting = {}  # (speed key, backend asked for, r) → row (naming the backend that ran)
        for model, model_rs, rows in zip(models, timed_rs, measured, strict=True):
            asked = [(backend, r) for backend in backends for r in model_rs]
            for (backend, r), row in zip(asked, rows, strict=True):
                by_setting[speed_key(model, r), backend, r] = row
        speeds: dict[SweepStep, dict[str, ThroughputRow]] = {}
        for step in steps:
            model = method_view(self.models[step.run.name, options.folds[0]], step.method)
            reference = by_setting[speed_key(model, rs[0]), backends[0], rs[0]]
            speeds[step] = {
                backend: relative_to(by_setting[speed_key(model, step.r), backend, step.r],
                                     reference)
                for backend in backends}
        return speeds, batch_size

    def real_clips(self, entry: nn.Module | MergingView, count: int) -> list[torch.Tensor]:
        """`count` clips of the scored split at their real lengths for timing a native-length
        model (`real_length_clips`), with a note saying so."""
        model = model_and_merging(entry)[0]
        fold = scored_fold(model, self.manifest, self.options.folds[0], "the checkpoint")
        clips = real_length_clips(model, self.manifest, self.plan.split, fold, count)
        frames = sum(len(clip) for clip in clips) / len(clips)
        self.timing_input = "random input; ElasticAST: real clips, packed"
        self.notes.add(
            f"ElasticAST runs are timed on {count} clips of the {self.plan.split} split at "
            f"their real lengths (mean {frames:.0f} frames), packed; fixed ASTs on random "
            "input padded to their length")
        return clips

    def scored(self, step: SweepStep, speed: dict[str, ThroughputRow], batch_size: int
               ) -> Iterator[SweepRow]:
        """The rows of `step`, one per backend: its metric over the folds, the drop from the
        run's rs[0] metric, and its throughput."""
        run, r, options = step.run, step.r, self.options
        values: dict[str, list[float]] = {backend: [] for backend in self.plan.backends}
        for fold in options.folds:
            model, merging = model_and_merging(self.model(run, r, fold, step.method))
            settings = merging.overridden(r=r)
            for backend in self.plan.backends:  # `auto` runs what it picked when timing
                with merging_as(model, settings):
                    evaluation = evaluate_model(
                        model, self.manifest, run.path(r, fold), split=self.plan.split,
                        fold=fold, batch_size=options.eval_batch_size, device=options.device,
                        forward=make_forward(model, speed[backend].backend),
                        dtype=ran_dtype(speed[backend].backend, options.dtype))
                values[backend].append(evaluation.metrics.summary()[self.metric])
            if self.metric == "mAP":
                self.notes.update(evaluation.notes())
        reference = (run.name, self.reference_method(step.method))
        for backend in self.plan.backends:
            mean, std = mean_and_std(values[backend])
            if self.references[reference] is None:
                self.references[reference] = mean
            timing = speed[backend]
            if backend == "auto":
                self.notes.add(f"--backend auto ran {run.name} at r={r} on {timing.backend}")
            yield SweepRow(
                backend_run_name(run.name, backend, self.plan.backends), r, mean,
                std if len(options.folds) > 1 else None, mean - self.references[reference],
                timing.samples_per_s, timing.speedup, timing.tokens, timing.gflops,
                run.path(r, options.folds[0]), self.plan.split, batch_size,
                settings.attention_line(), method_of(r, settings.method),
                device_label(options.device), ran_dtype(backend, options.dtype),
                torch.get_num_threads(), spread_pct=timing.spread_pct)


def ran_dtype(backend: str, dtype: str) -> str:
    """The precision a backend runs at when asked for `dtype`: the onnxruntime backends run
    their export (fp32, or fp32 with int8 linear layers) whatever autocast says."""
    return "fp32" if backend.startswith("onnxruntime") else dtype


def real_length_clips(model: nn.Module, manifest: Manifest, split: str, fold: int | None,
                      count: int) -> list[torch.Tensor]:
    """`count` normalized fbanks [T_i, F] of `split`'s clips at their own lengths, as evaluation
    prepares them for `model`: evenly spread over the split (repeated when it has fewer)."""
    spec = input_spec_on(model, manifest, fold)
    dataset = NativeLengthDataset(manifest.datafile(split, fold), manifest.labels_csv,
                                  target_length=spec.target_length, mean=spec.mean,
                                  std=spec.std, num_mel_bins=manifest.num_mel_bins,
                                  length=spec.length_policy())
    total = len(dataset)
    return [dataset[(index * total // count) if count <= total else index % total][0]
            for index in range(count)]


def reference_metric(plan: SweepPlan, run: SweepRun, method: str | None) -> float | None:
    """The metric drops of `run` with `method` are relative to: its first backend's row at
    rs[0] (NO_METHOD: the shared r = 0 row) when the plan keeps it (None: measured first)."""
    first_name = plan.row_names(run)[0]
    reference = SweepStep(run, plan.rs[0], method)
    return next((row.metric for row in plan.rows
                 if row.run == first_name and matches(row, reference)), None)


def relative_to(row: ThroughputRow, reference: ThroughputRow) -> ThroughputRow:
    """`row` with its speedups relative to `reference` (samples/s and GFLOPs)."""
    return replace(row, speedup=row.samples_per_s / reference.samples_per_s,
                   flop_speedup=reference.gflops / row.gflops)

