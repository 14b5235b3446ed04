"""`make demo`'s steps at reduced size: the report's tables and summary come from the CSV rows."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.cli.sweep import check_data_sweep_out
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.sweep_table import read_rows
from fastast_cli.reports.summary import summary_lines, table1_rows, table2_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def report(sweep_csv: Path) -> list[str]:
    """The summary sentences `fastast report` prints for the demo's runs at r = 4."""
    output = invoke("report", str(sweep_csv), "--baseline", "ast", "--tome", "tome",
                    "--kd", "tome+kd", "--r", "4")
    return [line for line in output.splitlines() if line.startswith(("r = 4", "distillation"))]


@pytest.fixture(scope="module")
def demo_sweep(small_demo, tmp_path_factory) -> Path:
    """The demo's steps (Makefile `demo`) with one epoch each and r = 4: teacher, the student
    trained without merging, with merging, with merging and KD, then the sweep."""
    runs = tmp_path_factory.mktemp("demo-runs")
    common = ["--data", str(small_demo), "--epochs", "1", "--device", "cpu"]
    invoke("train-teacher", "--recipe", "demo-teacher", "--out", str(runs / "teacher"), *common)
    invoke("distill", "--recipe", "demo", "--teacher", "none", "--r", "0",
           "--out", str(runs / "ast"), *common)
    invoke("distill", "--recipe", "demo", "--teacher", "none", "--r", "4",
           "--out", str(runs / "tome"), *common)
    invoke("distill", "--recipe", "demo-distill", "--r", "4", "--teacher-checkpoint",
           str(runs / "teacher/last.pt"), "--out", str(runs / "tome-kd"), *common)
    out = runs / "sweep.csv"
    invoke("sweep", "--data", str(small_demo), "--r", "0,4,8", "--device", "cpu",
           "--warmup", "0", "--runs", "1", "--batch-size", "2",
           "--checkpoint", f"ast={runs / 'ast/best.pt'}",
           "--checkpoint", f"tome={runs / 'tome/best.pt'}",
           "--checkpoint", f"tome+kd={runs / 'tome-kd/best.pt'}", "--out", str(out))
    return out


def expected_lines(sweep_csv: Path) -> list[str]:
    """The two sentences, computed by hand from the CSV's cells."""
    cells = {(row["run"], int(row["r"])): row for row in csv.DictReader(sweep_csv.open())}
    plain, merged, distilled = cells["ast", 0], cells["tome", 4], cells["tome+kd", 4]
    speedup = float(merged["samples_per_s"]) / float(plain["samples_per_s"])
    drop = float(merged["accuracy"]) - float(plain["accuracy"])
    change = float(distilled["accuracy"]) - float(merged["accuracy"])
    pace = ("as fast" if round(speedup, 2) == 1.0 else f"{speedup:.2f}× faster"
            if speedup > 1 else f"{1 / speedup:.2f}× slower")
    return [f"r = 4 runs {pace}, accuracy change {drop:+.4f}",
            f"distillation changes accuracy by {change:+.4f} at r = 4"]


def test_summary_is_computed_from_the_csv_rows(demo_sweep, tmp_path):
    lines = report(demo_sweep)
    assert len(lines) == 2
    for line, expected in zip(lines, expected_lines(demo_sweep), strict=True):
        assert line.startswith(expected), (line, expected)

    # Change the rows: the sentences follow.
    edited = tmp_path / "edited.csv"
    records = list(csv.DictReader(demo_sweep.open()))
    for record in records:
        if record["run"] == "tome+kd" and record["r"] == "4":
            record["accuracy"] = f"{float(record['accuracy']) + 0.25:.4f}"
        if record["run"] == "tome" and record["r"] == "4":
            record["samples_per_s"] = f"{float(record['samples_per_s']) * 3:.2f}"
    with edited.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    changed = report(edited)
    assert changed != lines
    for line, expected in zip(changed, expected_lines(edited), strict=True):
        assert line.startswith(expected), (line, expected)


def test_tables_hold_the_rows_of_their_runs(demo_sweep):
    rows = read_rows(demo_sweep)
    cells = {(row.run, row.r): row for row in rows}
    table1 = table1_rows(rows, "ast", "tome")
    assert [row["r"] for row in table1] == [0, 4, 8]
    for row in table1:
        assert row["inference_only"] == cells["ast", row["r"]].metric
        assert row["during_training"] == cells["tome", row["r"]].metric
        assert row["during_training_drop"] == pytest.approx(
            cells["tome", row["r"]].metric - cells["ast", 0].metric)
        assert row["flop_speedup"] == pytest.approx(
            cells["ast", 0].gflops / cells["ast", row["r"]].gflops)
        # One architecture and merging setting, one interleaved measurement: the two students
        # trained with merging share samples/s (the r = 0 run merges off the shelf, with
        # proportional attention on, so it is timed as a setting of its own at r > 0).
        assert cells["tome", row["r"]].samples_per_s == cells["tome+kd", row["r"]].samples_per_s
    # At r = 0 no merging setting changes the model: all three share one r = 0 reference.
    assert len({cells[run, 0].samples_per_s for run in ("ast", "tome", "tome+kd")}) == 1
    table2 = table2_rows(rows, "tome", "tome+kd")
    assert [row["change"] for row in table2] == pytest.approx(
        [cells["tome+kd", r].metric - cells["tome", r].metric for r in (0, 4, 8)])
    with pytest.raises(FastASTError, match="no run named 'kd'"):
        summary_lines(rows, baseline="ast", tome="tome", kd="kd", r=4)
    with pytest.raises(FastASTError, match="no row of 'tome' at r = 12"):
        summary_lines(rows, baseline="ast", tome="tome", kd=None, r=12)
    output = invoke("report", str(demo_sweep), "--baseline", "ast", "--tome", "tome",
                    "--r", "8")
    assert "Table 1" in output and "Table 2" not in output
    assert "FLOP speedup" in output
    assert [row["flop_speedup"] for row in table1][0] == 1.0
    assert table1[-1]["flop_speedup"] > 1.0  # r = 8 merges: fewer FLOPs
    assert len(re.findall(r"^r = 8 runs", output, flags=re.MULTILINE)) == 1
    wrong = CliRunner().invoke(app, ["report", str(demo_sweep), "--baseline", "ast", "--tome",
                                     "tome", "--r", "8", "--metric", "mAP"])
    assert wrong.exit_code == 2 and "--metric mAP: " in wrong.output
    assert "holds accuracy" in wrong.output  # the metric the CSV's header names
    bad = CliRunner().invoke(app, ["report", str(demo_sweep.parent / "none.csv"),
                                   "--baseline", "a", "--tome", "b", "--r", "0"])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_table1_says_how_each_run_merged(demo_sweep, tmp_path):
    # The CSV records the merging each row was measured with: the run trained without merging
    # is merged off the shelf (proportional attention on), the others as trained (off).
    records = list(csv.DictReader(demo_sweep.open()))
    assert {record["run"]: record["merging"] for record in records} == {
        "ast": "constant, proportional attention on",
        "tome": "constant, proportional attention off",
        "tome+kd": "constant, proportional attention off"}
    output = " ".join(invoke("report", str(demo_sweep), "--baseline", "ast", "--tome", "tome",
                             "--r", "4").split())
    split = records[0]["split"]
    assert split and f"(accuracy, {split} split; change vs ast at r = 0)" in output
    assert ("Inf: ast, trained without merging, merged off the shelf (constant, proportional "
            "attention on); Train+Inf: tome, trained with merging, as its checkpoint stores "
            "(constant, proportional attention off); samples/s and speedup: ast's") in output

    # A table written before the merging column: still resumed by sweep, and reported
    # without settings it does not hold.
    legacy = tmp_path / "legacy.csv"
    with legacy.open("w", newline="") as stream:
        newer = ("merging", "spread_pct")  # columns added later
        writer = csv.DictWriter(stream, fieldnames=[key for key in records[0] if key not in newer])
        writer.writeheader()
        writer.writerows({k: v for k, v in record.items() if k not in newer}
                         for record in records)
    check_data_sweep_out(legacy)
    output = " ".join(invoke("report", str(legacy), "--baseline", "ast", "--tome", "tome",
                             "--r", "4").split())
    assert ("Inf: ast, trained without merging, merged off the shelf; Train+Inf: tome, trained "
            "with merging, as its checkpoint stores; samples/s") in output
    other = tmp_path / "other.csv"
    other.write_text("run,r\nmine,0\n")
    with pytest.raises(FastASTError, match="not a table of this kind"):
        check_data_sweep_out(other)


def test_report_takes_hostile_rows_as_text_or_refuses_them(demo_sweep, tmp_path):
    records = list(csv.DictReader(demo_sweep.open()))

    def written(name: str, **changes: str) -> Path:
        path = tmp_path / name
        with path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows({**record, **(changes if record["run"] == "ast" else {})}
                             for record in records)
        return path

    # A run name that looks like rich markup is printed as it is (not parsed, no traceback).
    marked = written("marked.csv", run="[/bold]")
    output = " ".join(invoke("report", str(marked), "--baseline", "[/bold]", "--tome", "tome",
                             "--r", "4").split())
    assert "change vs [/bold] at r = 0)" in output and "[/bold] at r = 0: " in output
    # A speed that was never measured (0) is refused in one line, not divided by.
    for bad in ("0", "-3.5", "inf"):
        result = CliRunner().invoke(app, ["report", str(written(f"{bad}.csv", samples_per_s=bad)),
                                          "--baseline", "ast", "--tome", "tome", "--r", "4"])
        assert result.exit_code == 2, result.output
        assert "not a measured speed" in result.output
