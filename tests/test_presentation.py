"""What the tables, sentences and notes tell a user: tables that fit 80 columns without a cut
number, constant columns said once, `slower` when slower, signed changes, timing spread."""

from __future__ import annotations

import csv
import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.cli.sweep import (
    CONSTANT_COLUMNS,
    console_columns,
    metric_columns,
    spread_note,
    with_speed_shown,
)
from fastast_cli.evaluation import throughput
from fastast_cli.evaluation.sweep_table import SweepRow, read_rows
from fastast_cli.models.ast import build_model
from fastast_cli.reports.summary import summary_lines, table1_rows
from fastast_cli.reports.tables import Column, rich_table


def rendered(renderable, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def sweep_rows() -> list[SweepRow]:
    """Three runs of one method at r = 0…24, one split and timing batch."""
    rows = []
    for run in ("ast", "tome", "tome+kd"):
        for index, r in enumerate(range(0, 25, 4)):
            rows.append(SweepRow(
                run, r, 0.7750 - 0.0125 * index, None, -0.0125 * index, 409.12 + 61.3 * index,
                1 + 0.15 * index, 98 - 14 * index, 1.2345 - 0.1 * index,
                f"runs/a-very-long-folder-name/{run}/best.pt", "eval", 8,
                "constant, proportional attention off", "none" if r == 0 else "tome",
                spread_pct=2.0 + index))
    return rows


def test_sweep_table_fits_80_columns_with_every_number_whole():
    rows = sweep_rows()
    records = [row.to_dict("accuracy") for row in rows]
    text = rendered(rich_table("Sweep", with_speed_shown(records),
                               console_columns(metric_columns("accuracy", False)), keys=2,
                               constant=CONSTANT_COLUMNS))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    # constant columns are said once, under the title; the checkpoint is left to the CSV
    assert "split: eval; timing batch: 8" in text
    assert not re.search(r"┃\s*split\s*┃", text) and "best.pt" not in text
    body = [line for line in lines if line.startswith("│")]
    assert len(body) == len(rows)  # one table, not stacked: it fits
    for row, line in zip(rows, body, strict=True):
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        assert cells == [row.run, str(row.r), f"{row.metric:.4f}", f"{row.drop:+.4f}",
                         f"{row.samples_per_s:.2f} ±{row.spread_pct / 2:.0f}%",
                         f"{row.speedup:.2f}x", str(row.tokens), f"{row.gflops:.2f}"]


def test_a_table_too_wide_is_stacked_with_its_key_columns_not_cut():
    columns = [Column("name", "name"), *(Column(f"c{i}", f"column {i}", "{:.4f}")
                                         for i in range(12))]
    rows = [{"name": f"run-{k}", **{f"c{i}": 1000 * k + i + 0.123456 for i in range(12)}}
            for k in range(3)]
    text = rendered(rich_table("Wide", rows, columns))
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert "(continued, part 2 of" in text
    for row in rows:
        for i in range(12):
            assert f"{row[f'c{i}']:.4f}" in text  # every number whole
        # each part repeats the key column
        assert text.count(f" {row['name']} ") == text.count("(continued") + 1


def test_constant_and_blank_columns_leave_the_table():
    columns = [Column("run", "run"), Column("r", "r"), Column("std", "±", "{:.4f}")]
    rows = [{"run": "a", "r": r, "std": None} for r in (0, 8)]
    text = rendered(rich_table("T", rows, columns, constant=("run",)))
    assert "run: a" in text and "±" not in text
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    assert "run" not in header and "r" in header
    one_row = rendered(rich_table("T", rows[:1], columns, constant=("run",)))
    assert "run: a" not in one_row  # one row: nothing is constant across rows


def report_rows(tome_speed: float, tome_metric: float) -> list[SweepRow]:
    def row(run: str, r: int, metric: float, speed: float) -> SweepRow:
        return SweepRow(run, r, metric, None, 0.0, speed, 1.0, 10, 1.0, "x", "eval", 8, "",
                        "none" if r == 0 else "tome")

    return [row("ast", 0, 0.5, 100.0), row("ast", 8, 0.5, 100.0),
            row("tome", 0, 0.5, 100.0), row("tome", 8, tome_metric, tome_speed)]


def test_report_says_slower_when_slower_and_signs_the_change():
    slower = summary_lines(report_rows(59.0, 0.6053), baseline="ast", tome="tome", kd=None, r=8)
    assert slower[0].startswith("r = 8 runs 1.69× slower, accuracy change +0.1053 ")
    assert "faster" not in slower[0] and "drop" not in slower[0]
    faster = summary_lines(report_rows(170.0, 0.45), baseline="ast", tome="tome", kd=None, r=8)
    assert faster[0].startswith("r = 8 runs 1.70× faster, accuracy change -0.0500 ")
    same = summary_lines(report_rows(100.2, 0.5), baseline="ast", tome="tome", kd=None, r=8)
    assert same[0].startswith("r = 8 runs as fast, accuracy change +0.0000 ")
    # Table 1's columns say "change" and hold the signed difference (a gain is positive)
    table = table1_rows(report_rows(59.0, 0.6053), "ast", "tome")
    assert table[-1]["during_training_drop"] == pytest.approx(0.1053)


def test_report_headers_are_whole_at_80_columns(tmp_path):
    from fastast_cli.cli.report import table1_columns

    records = table1_rows(report_rows(59.0, 0.6053), "ast", "tome")
    text = rendered(rich_table("Table 1", records,
                               table1_columns("a-long-baseline", "a-long-tome-run")))
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert "change" in text and "drop" not in text


def test_sweep_timings_carry_their_spread(monkeypatch, tmp_path):
    durations = iter([0.1, 0.1, 0.2, 0.1, 0.1, 0.1])  # rounds of (r = 0, r = 4)
    monkeypatch.setattr(throughput, "time_forward", lambda *args: next(durations))
    model = build_model("tiny", 5, target_length=64)
    rows = throughput.sweep_throughput(model, [0, 4], batch_size=2, device="cpu", warmup=0,
                                       runs=3)
    assert [row.samples_per_s for row in rows] == pytest.approx([20.0, 20.0])
    assert [row.spread_pct for row in rows] == pytest.approx([50.0, 0.0])  # (20 - 10) / 20
    note = spread_note([vars(row) for row in rows], 3)
    assert note is not None and "differ by up to 50% (r = 0)" in note
    assert spread_note([{**vars(row), "spread_pct": 4.0} for row in rows], 3) is None


def test_sweep_without_data_writes_and_shows_the_spread(tmp_path):
    out = tmp_path / "speed.csv"  # a table from before the spread column is replaced
    out.write_text("r,tokens,gflops,samples_per_s,speedup,flop_speedup\n0,98,1.0,10.0,1.0,1.0\n")
    result = CliRunner().invoke(app, [
        "sweep", "--r", "0,4", "--model", "tiny", "--frames", "64", "--runs", "3",
        "--warmup", "0", "--batch-size", "1", "--device", "cpu", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    records = list(csv.DictReader(out.open()))
    assert [float(record["spread_pct"]) >= 0 for record in records] == [True, True]
    assert "replaced" in result.output
    out.write_text("mine\n")  # a file of the user's is still refused
    refused = CliRunner().invoke(app, ["sweep", "--r", "0", "--model", "tiny", "--out", str(out)])
    assert refused.exit_code == 2 and out.read_text() == "mine\n"
    assert "median of 3 runs ± half their spread" in " ".join(result.output.split())
    assert re.search(r"\d+\.\d\d ±\d+%", result.output)


def test_sweep_rows_read_back_their_spread(tmp_path):
    from fastast_cli.cli.sweep import csv_columns
    from fastast_cli.reports.tables import write_csv

    rows = sweep_rows()
    path = tmp_path / "sweep.csv"
    write_csv(path, [row.to_dict("accuracy") for row in rows], csv_columns("accuracy"))
    assert [row.spread_pct for row in read_rows(path)] == [row.spread_pct for row in rows]


def test_sweep_plot_labels_do_not_collide_and_the_legend_names_each_run_once(
        monkeypatch, tmp_path):
    from fastast_cli.reports import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: figures.append(figure))
    records = [row.to_dict("accuracy") for row in sweep_rows()]  # three runs on one curve
    plots.plot_tradeoff(plots.method_curves(records), "samples_per_s", "accuracy", "r",
                        tmp_path / "sweep.png", "t", series_key="curve")
    axes = figures[0].axes[0]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "ast", "tome", "tome+kd"]
    renderer = figures[0].canvas.get_renderer()
    notes = [child for child in axes.texts]
    boxes = [note.get_window_extent(renderer) for note in notes]
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert {note.get_text() for note in notes} == {f"r={r}" for r in range(0, 25, 4)}
    # several runs with several methods: `run (method)`
    mixed = [{**record, "method": "evit"} for record in records if record["method"] != "none"]
    names = {curve["curve"] for curve in plots.method_curves(records + mixed)}
    assert names == {f"{run} ({method})" for run in ("ast", "tome", "tome+kd")
                     for method in ("tome", "evit")}


def test_heat_map_colours_span_the_scores(monkeypatch, tmp_path):
    from fastast_cli.reports import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: figures.append(figure))
    scores = [[0.10, 0.20], [0.25, 0.12], [0.15, 0.18]]  # [windows, classes]
    plots.plot_timeline([0.0, 0.5, 1.0], [1.0, 1.5, 2.0], scores, ["dog", "rain"],
                        tmp_path / "t.png", "t")
    mesh = figures[0].axes[0].collections[0]
    assert mesh.get_clim() == pytest.approx((0.10, 0.25))
    assert figures[0].axes[1].get_ylabel() == "score (colours span 0.10–0.25)"
    assert plots.colour_scale([[0.3, 0.3]]) == pytest.approx((0.25, 0.35))


def test_a_resumed_sweep_estimates_time_from_the_rows_it_measures(small_demo, tmp_path,
                                                                   monkeypatch):
    """Rows kept from an earlier run are done steps, not measured ones: the progress starts
    past them (old: they were counted as instant steps, and the time left came out wrong)."""
    from fastast_cli.data.manifest import load_manifest
    from fastast_cli.models.checkpoints import save_checkpoint
    from fastast_cli.progress import set_progress

    manifest = load_manifest(small_demo)
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    checkpoint = save_checkpoint(tmp_path / "m.pt", model, mean=mean, std=std)
    monkeypatch.setenv("FASTAST_PROGRESS_INTERVAL", "0")
    args = ["sweep", "--data", str(small_demo), "--checkpoint", f"m={checkpoint}", "--runs",
            "1", "--warmup", "0", "--batch-size", "2", "--device", "cpu",
            "--out", str(tmp_path / "sweep.csv")]
    try:
        assert CliRunner().invoke(app, [*args, "--r", "0,2"]).exit_code == 0
        result = CliRunner().invoke(app, [*args, "--r", "0,2,4"])
    finally:
        set_progress(False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("sweeping: ")]
    assert lines and all(line.startswith("sweeping: step 3/3 (100%)") for line in lines), lines
    timing = [line for line in result.stderr.splitlines() if line.startswith("timing: ")]
    # r = 4, with the kept r = 0 and r = 2 timed again in the same loop (one r = 0 reference)
    assert timing[-1].startswith("timing: step 3/3 (100%)")
