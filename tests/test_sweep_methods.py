"""`fastast sweep --method a,b,...`: methods × r rows with one shared r = 0 row, one timing loop,
one curve per method, the budget's choice over every method, old tables resumed."""

from __future__ import annotations

import csv
import re

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.cli import sweep as sweep_cli
from fastast_cli.cli.options import parse_run
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation import sweep as sweep_module
from fastast_cli.evaluation.sweep import SweepOptions, plan_sweep
from fastast_cli.evaluation.sweep_table import SweepRow, read_table, recommend
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.reports.plots import method_curves

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ["tome", "pitome", "random"]


@pytest.fixture(scope="module")
def checkpoint(small_demo, tmp_path_factory):
    manifest = load_manifest(small_demo)
    torch.manual_seed(0)
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, mean=mean, std=std,
                           metric="accuracy")


def sweep(*args):
    return CliRunner().invoke(app, ["sweep", "--device", "cpu", "--warmup", "0", "--runs", "1",
                                    "--batch-size", "2", *args])


def test_one_row_per_method_and_r_one_shared_r0_row_one_loop_one_curve_per_method(
        small_demo, checkpoint, tmp_path, monkeypatch):
    loops, curves = [], {}
    measure = sweep_module.sweep_throughputs
    monkeypatch.setattr(sweep_module, "sweep_throughputs", lambda models, rs, **options: (
        loops.append(([model.reduction_method for model in models], [list(r) for r in rs]))
        or measure(models, rs, **options)))
    plot = sweep_cli.plot_tradeoff

    def spy(rows, *args, series_key=None, **options):
        for row in rows:
            curves.setdefault(row[series_key], []).append((row["method"], row["r"]))
        return plot(rows, *args, series_key=series_key, **options)

    monkeypatch.setattr(sweep_cli, "plot_tradeoff", spy)
    out = tmp_path / "sweep.csv"
    result = sweep("--data", str(small_demo), "--checkpoint", f"m={checkpoint}", "--r", "0,4,8",
                   "--method", ",".join(METHODS), "--out", str(out), "--budget", "0.01x")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [(row["method"], int(row["r"])) for row in rows] == [("none", 0)] + [
        (method, r) for method in METHODS for r in (4, 8)]
    # one timing loop, r = 0 timed once, every method at each r with the same tokens
    assert len(loops) == 1 and sum(rs.count(0) for rs in loops[0][1]) == 1
    assert sorted(loops[0][0]) == sorted(METHODS)
    for r in (4, 8):
        assert len({(row["tokens"], row["gflops"]) for row in rows if int(row["r"]) == r}) == 1
    assert float(rows[0]["drop"]) == 0.0 and rows[0]["speedup"] == "1.00"
    for row in rows[1:]:  # drops against the one r = 0 row
        assert float(row["drop"]) == pytest.approx(
            float(row["accuracy"]) - float(rows[0]["accuracy"]), abs=1e-4)
    assert curves == {method: [("none", 0), (method, 4), (method, 8)] for method in METHODS}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = re.search(r"m: (no reduction \(r=0\)|(ToMe|PiToMe|random) r=(4|8)) meets --budget",
                     " ".join(result.output.split()))
    assert best is not None, result.output  # every row meets 0.01x: the best of all methods


def test_each_method_runs_on_a_view_of_the_one_loaded_checkpoint(small_demo, checkpoint):
    manifest = load_manifest(small_demo)
    options = SweepOptions(methods=("pitome", "evit"))
    plan = plan_sweep([parse_run(f"m={checkpoint}")], [0, 4], manifest, options)
    assert [(step.method, step.r) for step in plan.steps] == [
        ("none", 0), ("pitome", 4), ("evit", 4)]
    measurement = sweep_module.SweepMeasurement(plan, manifest, options)
    base = measurement.models["m", None]
    views = {method: measurement.model(plan.runs[0], 4, None, method)
             for method in ("pitome", "evit", "none")}
    assert views["pitome"].reduction_method == "pitome" and views["evit"].reduction_method == "evit"
    assert views["none"] is base and base.reduction_method == "tome"  # the checkpoint's, kept
    assert views["pitome"].blocks is base.blocks  # the weights are shared, not copied


def test_an_older_table_reads_as_tome_and_resumes_with_new_methods(small_demo, checkpoint,
                                                                    tmp_path):
    out = tmp_path / "sweep.csv"
    assert sweep("--data", str(small_demo), "--checkpoint", f"m={checkpoint}", "--r", "0,4",
                 "--out", str(out)).exit_code == 0
    with out.open() as stream:  # as written before the method column existed
        records = list(csv.DictReader(stream))
    header = [key for key in records[0] if key != "method"]
    with out.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    table = read_table(out)
    assert [(row.method, row.r) for row in table.rows] == [("none", 0), ("tome", 4)]
    options = SweepOptions(methods=("tome", "evit"))
    plan = plan_sweep([parse_run(f"m={checkpoint}")], [0, 4], load_manifest(small_demo),
                      options, table)
    assert [(step.method, step.r) for step in plan.steps] == [("evit", 4)]  # the rest is held
    result = sweep("--data", str(small_demo), "--checkpoint", f"m={checkpoint}", "--r", "0,4",
                   "--out", str(out), "--method", "tome,evit")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [(row["method"], row["r"]) for row in rows] == [("none", "0"), ("tome", "4"),
                                                          ("evit", "4")]


def test_budget_picks_from_every_method_and_curves_share_the_r0_row():
    def row(method, r, drop, speedup):
        return SweepRow("a", r, 0.9 + drop, None, drop, 100 * speedup, speedup, 10, 1.0, "x",
                        "eval", 8, "constant, proportional attention on", method)

    rows = [row("none", 0, 0.0, 1.0), row("tome", 8, -0.05, 1.5), row("pitome", 8, -0.02, 1.5),
            row("evit", 16, -0.01, 2.1), row("pitome", 16, -0.04, 2.0)]
    best = recommend(rows, "1.4x")
    assert (best.method, best.r) == ("evit", 16)
    assert (recommend(rows, "1.5x").method, recommend(rows[:3], "1.5x").method) == (
        "evit", "pitome")
    curves = method_curves([r.to_dict() for r in rows])
    assert [(c["curve"], c["method"], c["r"]) for c in curves] == [
        ("tome", "none", 0), ("tome", "tome", 8), ("pitome", "none", 0), ("pitome", "pitome", 8),
        ("pitome", "pitome", 16), ("evit", "none", 0), ("evit", "evit", 16)]


def test_several_methods_without_data_are_refused_in_one_line(checkpoint):
    result = sweep("--checkpoint", str(checkpoint), "--r", "0,4", "--method", "tome,evit")
    assert result.exit_code == 2 and "one --method at a time" in " ".join(result.output.split())


def test_the_report_tells_tomes_story_from_a_sweep_over_methods():
    from fastast_cli.errors import FastASTError
    from fastast_cli.reports.summary import table1_rows

    def row(run, method, r, metric):
        return SweepRow(run, r, metric, None, 0.0, 100.0, 1.0, 10, 1.0, "x", "eval", 8, "",
                        method)

    rows = [row("base", "none", 0, 0.9), row("base", "tome", 8, 0.8),
            row("base", "pitome", 8, 0.85), row("kd", "none", 0, 0.9), row("kd", "tome", 8, 0.7)]
    table = table1_rows(rows, "base", "kd")
    assert [(line["r"], line["inference_only"], line["during_training"]) for line in table] == [
        (0, 0.9, 0.9), (8, 0.8, 0.7)]
    assert table1_rows([*rows[:1], rows[2], *rows[3:]], "base", "kd")[1][
        "inference_only"] == 0.85  # a run swept with one other method: that method's rows
    with pytest.raises(FastASTError, match="swept with pitome, evit"):
        table1_rows([*rows[:1], rows[2], row("base", "evit", 8, 0.8), *rows[3:]], "base", "kd")
