"""The rows of a sweep and its CSV: what one run with one token-reduction method at one r scored
and ran at, read back to resume.

The CSV names its metric column after the metric (`accuracy` or `mAP`); tables written before
that say `metric` and are still read (and rewritten with the metric's name on resume). Its
`method` column names the reduction method (`none` for r = 0, the plain model every method
shares); tables written before it held ToMe's rows only and are read so. The `device`, `dtype`
and `threads` columns (with `batch`) say what every row was timed and scored with; tables from
before them are read with those cells blank.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastast_cli.errors import FastASTError
from fastast_cli.values import number, shown

# Names of the metric column: the metric itself, or `metric` in tables from before it was named.
METRIC_NAMES = ("accuracy", "mAP")
UNNAMED_METRIC = "metric"
# The method of r = 0 rows: no token is reduced, so every method runs the same model.
NO_METHOD = "none"
LEGACY_METHOD = "tome"  # the method of rows in tables from before the method column


@dataclass
class SweepRow:
    """One run with one method at one r: its metric (mean over folds), the drop from the first
    r (r = 0: the plain model, method `none`), and its speed."""

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
    method: str = LEGACY_METHOD  # token-reduction method (NO_METHOD at r = 0)
    # What the timing (and the metric) ran on: the device (`devices.device_label`), the
    # precision, and the CPU threads torch used; blank/0 in tables from before they were kept.
    device: str = ""
    dtype: str = ""
    threads: int = 0
    spread_pct: float | None = None  # timing spread of samples_per_s (None: older tables)

    def to_dict(self, metric: str = UNNAMED_METRIC) -> dict[str, float | int | str | None]:
        """The row as a record; the metric's cell keyed by `metric` (the CSV's column)."""
        record = asdict(self)
        record[metric] = record.pop("metric")
        return record


@dataclass
class SweepTable:
    """The rows of a sweep's CSV and the name of its metric (None when the header says only
    `metric`)."""

    rows: list[SweepRow] = field(default_factory=list)
    metric: str | None = None


def read_table(path: Path) -> SweepTable:
    """The rows of an earlier (maybe interrupted) sweep written as CSV to `path`; none if absent."""
    if not path.exists():
        return SweepTable()
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            header = reader.fieldnames or []
            named = [name for name in (*METRIC_NAMES, UNNAMED_METRIC) if name in header]
            if len(named) != 1:
                raise FastASTError(
                    f"{path} is not a sweep table of this kind: remove it or pick another --out")
            metric = named[0]
            rows = [row_of(record, metric, path) for record in reader]
    except (UnicodeDecodeError, csv.Error) as error:
        raise FastASTError(f"{path} is not a sweep table (not UTF-8 CSV text: "
                           f"{shown(str(error))})") from None
    except IsADirectoryError:
        raise FastASTError(f"{path} is a folder, not a sweep table") from None
    return SweepTable(rows, metric if metric in METRIC_NAMES else None)


def read_rows(path: Path) -> list[SweepRow]:
    """The rows of the sweep table at `path` (see `read_table`)."""
    return read_table(path).rows


def row_of(record: dict[str, str], metric: str, path: Path) -> SweepRow:
    """One CSV record as a row; a record that is not one, or has no measured speed, is refused."""
    try:
        row = SweepRow(
            run=record["run"], r=int(record["r"]), metric=float(record[metric]),
            metric_std=float(record["metric_std"]) if record["metric_std"] else None,
            drop=float(record["drop"]),
            samples_per_s=float(record["samples_per_s"]),
            speedup=float(record["speedup"]), tokens=int(record["tokens"]),
            gflops=float(record["gflops"]), checkpoint=record["checkpoint"],
            split=record.get("split") or "",  # older tables: split unknown, re-measured
            batch=int(record.get("batch") or 0),
            merging=record.get("merging") or "",  # older tables: not recorded
            method=record.get("method") or method_of(int(record["r"])),
            device=record.get("device") or "", dtype=record.get("dtype") or "",
            threads=int(record.get("threads") or 0),  # older tables: not recorded
            spread_pct=float(record["spread_pct"]) if record.get("spread_pct") else None,
        )
    except (KeyError, TypeError, ValueError):
        raise FastASTError(
            f"{path} is not a sweep table of this kind: remove it or pick another --out"
        ) from None
    if not all(math.isfinite(value) for value in (row.speedup, row.gflops, row.drop)):
        raise FastASTError(f"{path}: run {shown(row.run)} at r = {row.r} holds a speedup, "
                           "GFLOPs or drop that is not a finite number")
    if not 0 < row.samples_per_s < math.inf:  # speeds are divided by
        raise FastASTError(
            f"{path}: run {row.run!r} at r = {row.r} has samples_per_s "
            f"{record['samples_per_s']!r}, not a measured speed")
    return row


def method_of(r: int, method: str = LEGACY_METHOD) -> str:
    """The method a row at `r` names: `method`, or NO_METHOD at r = 0 (nothing reduced)."""
    return method if r else NO_METHOD


def parse_budget(budget: str) -> tuple[str, float]:
    """`--budget`: samples/s (`120`) or a speedup over r = 0 (`1.5x`), a finite number > 0, as
    (the row attribute it bounds, the value); checked before a sweep starts."""
    text = budget.strip().lower()
    try:
        wanted = float(text.removesuffix("x"))
    except ValueError:
        raise FastASTError(
            f"--budget {shown(budget)}: give samples/s (120) or a speedup (1.5x)"
        ) from None
    number(wanted, f"--budget {shown(budget)}", above=0.0)
    return ("speedup" if text.endswith("x") else "samples_per_s"), wanted


def recommend(rows: Sequence[SweepRow], budget: str) -> SweepRow | None:
    """The row with the smallest drop whose speed meets `budget`: samples/s (`120`) or a
    speedup over r = 0 (`1.5x`), among every method and r of `rows`. None when no row meets
    it."""
    key, wanted = parse_budget(budget)
    meeting = [row for row in rows if getattr(row, key) >= wanted]
    if not meeting:
        return None
    return max(meeting, key=lambda row: (row.drop, row.samples_per_s))
