"""The FastAST story in numbers, from the rows of a sweep: the paper's Tables 1 and 2 in small
and a two-line summary.

Three runs of the same architecture play the roles of the FastAST paper's tables:

- `baseline`: trained without merging (r = 0) and merged off the shelf at each r: ToMe at
  inference only (Table 1, Inf);
- `tome`: trained with merging: ToMe during training and inference (Table 1, Train+Inf) and
  the student without distillation (Table 2);
- `kd`: trained with merging and cross-model distillation (Table 2, with KD).

Everything here is computed from the rows (e.g. the CSV written by `fastast sweep --data`), so
the tables and sentences always say what was measured. Drops are relative to the baseline at
the sweep's first r (r = 0, the plain AST). A sweep over several token-reduction methods
(`fastast sweep --method tome,pitome,...`) tells ToMe's story: each run's ToMe rows and its
shared r = 0 row (a run swept with one other method alone: that method's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.sweep_table import NO_METHOD, SweepRow

STORY_METHOD = "tome"  # the method of the FastAST paper's tables


def rows_by_r(rows: Sequence[SweepRow], run: str) -> dict[int, SweepRow]:
    """The rows of run `run` with its story's method (`story_method`), keyed by r;
    FastASTError when the sweep has none."""
    method = story_method(rows, run)
    mine = {row.r: row for row in rows
            if row.run == run and row.method in (method, NO_METHOD)}
    if not mine:
        names = ", ".join(dict.fromkeys(row.run for row in rows)) or "none"
        raise FastASTError(f"the sweep has no run named {run!r} (its runs: {names})")
    return mine


def story_method(rows: Sequence[SweepRow], run: str) -> str:
    """The method whose rows tell run `run`'s story: ToMe's, or the run's one other method;
    FastASTError when the run was swept with several methods but not ToMe."""
    methods = list(dict.fromkeys(row.method for row in rows
                                 if row.run == run and row.method != NO_METHOD))
    if STORY_METHOD in methods or not methods:
        return STORY_METHOD
    if len(methods) > 1:
        raise FastASTError(f"run {run!r} was swept with {', '.join(methods)}: the tables "
                           "compare runs of one method; sweep it with tome too")
    return methods[0]


def reference_row(rows: Sequence[SweepRow], baseline: str) -> SweepRow:
    """The baseline at its smallest r (r = 0 in a usual sweep): what every change is against."""
    mine = rows_by_r(rows, baseline)
    return mine[min(mine)]


def merging_of(rows: Sequence[SweepRow], run: str) -> str:
    """How run `run` merged in the sweep (schedule and proportional attention, e.g. `constant,
    proportional attention on`); empty when the rows do not say (a table from before the
    CSV's merging column)."""
    return " / ".join(dict.fromkeys(row.merging for row in rows_by_r(rows, run).values()
                                    if row.merging))


def table1_caption(rows: Sequence[SweepRow], baseline: str, tome: str) -> str:
    """What Table 1's columns hold: the baseline trained without merging and merged off the
    shelf (ToMe turns proportional attention on there), the other run trained with merging
    and run as its checkpoint stores, each with the merging the sweep measured it with;
    samples/s and speedup are the baseline's."""
    def settings(run: str) -> str:
        merging = merging_of(rows, run)
        return f" ({merging})" if merging else ""

    return (f"Inf: {baseline}, trained without merging, merged off the shelf"
            f"{settings(baseline)}; Train+Inf: {tome}, trained with merging, as its checkpoint "
            f"stores{settings(tome)}; samples/s and speedup: {baseline}'s")


def table1_rows(rows: Sequence[SweepRow], baseline: str, tome: str) -> list[dict[str, Any]]:
    """Table 1 in small, one row per r both runs have: tokens and speed at r, the baseline
    merged at inference only, and the run trained with merging; changes vs the baseline at r = 0.
    Speed is the baseline's (runs of one architecture share one measurement); beside the
    measured speedup, the speedup its FLOPs promise (GFLOPs at r = 0 over GFLOPs at r)."""
    reference = reference_row(rows, baseline)
    inference, training = rows_by_r(rows, baseline), rows_by_r(rows, tome)
    return [
        {
            "r": r, "tokens": inference[r].tokens, "samples_per_s": inference[r].samples_per_s,
            "speedup": inference[r].samples_per_s / reference.samples_per_s,
            "flop_speedup": flop_ratio(reference.gflops, inference[r].gflops),
            "inference_only": inference[r].metric,
            "inference_only_drop": inference[r].metric - reference.metric,
            "during_training": training[r].metric,
            "during_training_drop": training[r].metric - reference.metric,
        }
        for r in sorted(inference.keys() & training.keys())
    ]


def flop_ratio(reference_gflops: float, gflops: float) -> float:
    """How many times fewer FLOPs `gflops` takes than `reference_gflops` (NaN without FLOPs)."""
    return reference_gflops / gflops if gflops > 0 else math.nan


def table2_rows(rows: Sequence[SweepRow], tome: str, kd: str) -> list[dict[str, Any]]:
    """Table 2 in small, one row per r both runs have: the student without and with
    distillation, and what distillation changes."""
    without, with_kd = rows_by_r(rows, tome), rows_by_r(rows, kd)
    return [
        {
            "r": r, "samples_per_s": without[r].samples_per_s, "without_kd": without[r].metric,
            "with_kd": with_kd[r].metric, "change": with_kd[r].metric - without[r].metric,
        }
        for r in sorted(without.keys() & with_kd.keys())
    ]


def pace(speedup: float) -> str:
    """A speed ratio in words: `1.25× faster`, `1.70× slower` (a ratio of 0.59), `as fast`."""
    if round(speedup, 2) == 1.0:
        return "as fast"
    if speedup > 1:
        return f"{speedup:.2f}× faster"
    return f"{1 / speedup:.2f}× slower"


def summary_lines(
    rows: Sequence[SweepRow], *, baseline: str, tome: str, kd: str | None, r: int,
    metric: str = "accuracy",
) -> list[str]:
    """Two sentences: what merging at r buys and costs (the run trained with merging against
    the baseline at r = 0: faster or slower, and the metric's signed change), and what
    distillation changes at r (with KD against without)."""
    reference = reference_row(rows, baseline)
    merged = rows_by_r(rows, tome).get(r)
    if merged is None:
        raise FastASTError(f"the sweep has no row of {tome!r} at r = {r}: sweep that r too")
    lines = [
        f"r = {r} runs {pace(merged.samples_per_s / reference.samples_per_s)}, {metric} "
        f"change {merged.metric - reference.metric:+.4f} ({tome} at r = {r}: "
        f"{merged.metric:.4f}, {merged.samples_per_s:.1f} samples/s; {baseline} at "
        f"r = {reference.r}: {reference.metric:.4f}, {reference.samples_per_s:.1f} samples/s)"
    ]
    if kd is not None:
        distilled = rows_by_r(rows, kd).get(r)
        if distilled is None:
            raise FastASTError(f"the sweep has no row of {kd!r} at r = {r}: sweep that r too")
        lines.append(
            f"distillation changes {metric} by {distilled.metric - merged.metric:+.4f} at "
            f"r = {r} ({kd}: {distilled.metric:.4f}, {tome}: {merged.metric:.4f})"
        )
    return lines
