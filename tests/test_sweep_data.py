"""`fastast sweep --data`: metric rows agree with evaluate, CSV equals table, resume, budget."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.cli.options import parse_run
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation import sweep as sweep_module
from fastast_cli.evaluation.evaluate import evaluate_checkpoint
from fastast_cli.evaluation.sweep_table import SweepRow, recommend
from fastast_cli.models.checkpoints import save_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoints(small_demo, tmp_path_factory):
    manifest = load_manifest(small_demo)
    folder = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (0, 1):
        import torch

        torch.manual_seed(seed)
        model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                            labels=manifest.label_names)
        mean, std = manifest.norm_stats()
        paths.append(save_checkpoint(folder / f"m{seed}.pt", model, mean=mean, std=std,
                                     metric="accuracy"))
    return paths


def sweep(args):
    return CliRunner().invoke(app, ["sweep", "--device", "cpu", "--warmup", "0", "--runs", "1",
                                    "--batch-size", "2", *args])


def test_rows_match_evaluate_and_the_csv_equals_the_table(small_demo, tiny_checkpoints, tmp_path):
    out = tmp_path / "sweep.csv"
    result = sweep(["--data", str(small_demo), "--checkpoint", f"a={tiny_checkpoints[0]}",
                    "--r", "0:30:10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [int(row["r"]) for row in rows] == [0, 10, 20, 30]
    plain = evaluate_checkpoint(tiny_checkpoints[0], load_manifest(small_demo), r=0)
    assert float(rows[0]["accuracy"]) == pytest.approx(plain.metrics.accuracy, abs=5e-5)
    assert float(rows[0]["drop"]) == 0.0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tokens = [int(row["tokens"]) for row in rows]
    gflops = [float(row["gflops"]) for row in rows]
    assert tokens == sorted(tokens, reverse=True) and len(set(tokens)) == 4
    assert gflops == sorted(gflops, reverse=True)
    table_lines = [line for line in result.output.splitlines() if line.startswith("│")]
    assert len(table_lines) == len(rows)
    for line, row in zip(table_lines, rows, strict=True):
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        # The console shows the CSV's cells but those said once in the title (one run, method,
        # split and timing batch; the merging), the blank ± and the checkpoint; samples/s with
        # ± half its timing spread.
        speed = f"{row['samples_per_s']} ±{float(row['spread_pct']) / 2:.0f}%"
        assert [cell.rstrip("x") for cell in cells] == [
            row["r"], row["accuracy"], row["drop"], speed, row["speedup"], row["tokens"],
            row["gflops"]]
        assert row["merging"] == "constant, proportional attention on"
    title = " ".join(result.output.split())
    assert f"run: a; split: {rows[0]['split']}; timing batch: {rows[0]['batch']}" in title
    assert "method tome (none at r = 0)" in title


def test_rerun_skips_finished_rows(small_demo, tiny_checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "sweep.csv"
    args = ["--data", str(small_demo), "--checkpoint", f"a={tiny_checkpoints[0]}",
            "--checkpoint", f"b={tiny_checkpoints[1]}", "--out", str(out)]
    assert sweep([*args, "--r", "0,8"]).exit_code == 0
    first = list(csv.DictReader(out.open()))
    evaluated = []
    real = sweep_module.evaluate_model
    monkeypatch.setattr(sweep_module, "evaluate_model",
                        lambda model, *a, **k: evaluated.append(model.r_schedule[0])
                        or real(model, *a, **k))
    result = sweep([*args, "--r", "0,8,16"])
    assert result.exit_code == 0, result.output
    assert evaluated == [16, 16]  # one new row per run, nothing evaluated twice
    rows = list(csv.DictReader(out.open()))
    assert [(row["run"], row["r"]) for row in rows] == [
        ("a", "0"), ("a", "8"), ("a", "16"), ("b", "0"), ("b", "8"), ("b", "16")]
    # Kept rows keep their metric; their timing is this run's, as the new rows' is (one loop).
    timing = ("samples_per_s", "speedup", "tokens", "gflops", "batch")
    for now, before in ((rows[0], first[0]), (rows[4], first[3])):
        assert {k: v for k, v in now.items() if k not in timing} == {
            k: v for k, v in before.items() if k not in timing}
    for row in rows:
        reference = next(r for r in rows if r["run"] == row["run"] and r["r"] == "0")
        ratio = float(row["samples_per_s"]) / float(reference["samples_per_s"])
        assert float(row["speedup"]) == pytest.approx(ratio, abs=0.01)


def test_per_r_checkpoints_and_fold_patterns(small_demo, tiny_checkpoints, tmp_path):
    folder = tmp_path / "runs"
    for r, source in ((0, 0), (6, 1)):
        (folder / f"r{r}").mkdir(parents=True)
        (folder / f"r{r}" / "best.pt").write_bytes(tiny_checkpoints[source].read_bytes())
    out = tmp_path / "train-inf.csv"
    result = sweep(["--data", str(small_demo), "--checkpoint",
                    f"train-inf={folder}/r{{r}}/best.pt", "--r", "0,6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert rows[1]["checkpoint"].endswith("r6/best.pt")
    manifest = load_manifest(small_demo)
    other = evaluate_checkpoint(folder / "r6/best.pt", manifest, r=6)
    assert float(rows[1]["accuracy"]) == pytest.approx(other.metrics.accuracy, abs=5e-5)
    assert rows[0]["metric_std"] == ""  # no folds, no spread: a blank cell
    folds = sweep(["--data", str(small_demo), "--checkpoint", f"{folder}/r0/best.pt",
                   "--folds", "1-2", "--r", "0", "--out", str(tmp_path / "folds.csv")])
    assert folds.exit_code == 0, folds.output
    (spread,) = list(csv.DictReader((tmp_path / "folds.csv").open()))
    assert float(spread["metric_std"]) >= 0.0


def test_a_fold_sweep_holds_one_model_per_run_and_one_runs_folds_at_a_time(
    small_demo, tiny_checkpoints, tmp_path, monkeypatch
):
    """Every checkpoint is checked before timing, but only the timed model of each run stays
    in memory; the other folds are read again when their run is scored and freed after it."""
    import gc
    import weakref

    folder = tmp_path / "runs"
    folder.mkdir()
    for fold in (1, 2, 3):
        for name, source in (("a", 0), ("b", 1)):
            (folder / f"{name}-fold{fold}.pt").write_bytes(tiny_checkpoints[source].read_bytes())
    read, alive, peak = [], [], [0]
    load = sweep_module.load_classifier

    def counting(path, **options):
        model = load(path, **options)
        read.append(path)
        alive.append(weakref.ref(model))
        gc.collect()
        peak[0] = max(peak[0], sum(ref() is not None for ref in alive))
        return model

    monkeypatch.setattr(sweep_module, "load_classifier", counting)
    out = tmp_path / "folds.csv"
    result = sweep(["--data", str(small_demo), "--folds", "1-3", "--r", "0,8", "--out", str(out),
                    "--checkpoint", f"a={folder}/a-fold{{fold}}.pt",
                    "--checkpoint", f"b={folder}/b-fold{{fold}}.pt"])
    assert result.exit_code == 0, result.output
    assert [(row["run"], row["r"]) for row in csv.DictReader(out.open())] == [
        ("a", "0"), ("a", "8"), ("b", "0"), ("b", "8")]
    for name in "ab":  # the first fold read once (checked and timed), the others twice
        assert [read.count(f"{folder}/{name}-fold{fold}.pt") for fold in (1, 2, 3)] == [1, 2, 2]
    assert peak[0] == 4  # 2 runs' timed models + the scored run's 2 other folds (was 6)


def test_every_checkpoint_of_a_per_r_run_is_checked_before_any_timing(
    small_demo, tiny_checkpoints, tmp_path, monkeypatch
):
    """A `{r}` run whose r = 8 checkpoint is missing fails before the timing loop starts."""
    folder = tmp_path / "runs"
    (folder / "r0").mkdir(parents=True)
    (folder / "r0" / "best.pt").write_bytes(tiny_checkpoints[0].read_bytes())
    timed = []
    monkeypatch.setattr(sweep_module, "sweep_throughputs", lambda *a, **k: timed.append(1))
    result = sweep(["--data", str(small_demo), "--checkpoint", f"t={folder}/r{{r}}/best.pt",
                    "--r", "0,8", "--out", str(tmp_path / "t.csv")])
    assert result.exit_code == 2 and "r8/best.pt" in result.output, result.output
    assert timed == []


def test_identical_architectures_share_one_interleaved_measurement(
    small_demo, tiny_checkpoints, tmp_path, monkeypatch
):
    manifest = load_manifest(small_demo)
    deeper = build_model("tiny", 10, target_length=200, depth=3, fstride=16, tstride=16,
                         labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    other = save_checkpoint(tmp_path / "deeper.pt", deeper, mean=mean, std=std)
    calls = []
    real = sweep_module.sweep_throughputs

    def spy(models, rs, **options):
        calls.append(([model.config.depth for model in models], [list(r) for r in rs]))
        return real(models, rs, **options)

    monkeypatch.setattr(sweep_module, "sweep_throughputs", spy)
    out = tmp_path / "sweep.csv"
    result = sweep(["--data", str(small_demo), "--checkpoint", f"a={tiny_checkpoints[0]}",
                    "--checkpoint", f"deep={other}", "--checkpoint", f"b={tiny_checkpoints[1]}",
                    "--r", "0,8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # One loop: the two architectures, each with its own r = 0 reference.
    assert calls == [([2, 3], [[0, 8], [0, 8]])]
    rows = {(row["run"], int(row["r"])): row for row in csv.DictReader(out.open())}
    for r in (0, 8):
        assert rows["a", r]["samples_per_s"] == rows["b", r]["samples_per_s"]
        assert rows["a", r]["speedup"] == rows["b", r]["speedup"]
    assert rows["a", 0]["speedup"] == rows["deep", 0]["speedup"] == "1.00"


def test_budget_recommends_the_smallest_drop_that_is_fast_enough():
    def row(r, drop, speed, speedup):
        return SweepRow("a", r, 0.9 + drop, 0.0, drop, speed, speedup, 10, 1.0, "x", "eval", 8,
                        "constant, proportional attention on")

    rows = [row(0, 0.0, 100, 1.0), row(10, -0.01, 130, 1.3), row(20, -0.03, 160, 1.6),
            row(30, -0.02, 170, 1.7)]
    assert recommend(rows, "150").r == 30
    assert recommend(rows, "1.25x").r == 10
    assert recommend(rows, "500") is None
    assert parse_run("kd=runs/a.pt").name == "kd"
    assert parse_run("runs/esc50-kd/best.pt").name == "esc50-kd"


def test_bad_sweep_arguments(small_demo):
    assert sweep(["--data", str(small_demo)]).exit_code == 2
    assert sweep(["--data", str(small_demo), "--checkpoint", "missing.pt"]).exit_code == 2


def test_runs_of_one_architecture_share_the_r0_reference_and_each_checkpoint_is_read_once(
    small_demo, tiny_checkpoints, tmp_path, monkeypatch
):
    """Two runs of one architecture that merge differently (proportional attention on and off)
    are timed in one loop, r = 0 once for both: same samples/s at r = 0, same reference."""
    import torch

    manifest = load_manifest(small_demo)
    torch.manual_seed(2)
    trained = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                          labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    merged = save_checkpoint(tmp_path / "merged.pt", trained, mean=mean, std=std, merging={
        "method": "tome", "r": 4, "schedule": "constant", "proportional_attention": False})
    calls = []
    real = sweep_module.sweep_throughputs

    def spy(models, rs, **options):
        calls.append([list(r) for r in rs])
        return real(models, rs, **options)

    read = []
    load = sweep_module.load_classifier
    monkeypatch.setattr(sweep_module, "sweep_throughputs", spy)
    monkeypatch.setattr(sweep_module, "load_classifier",
                        lambda path, **k: read.append(path) or load(path, **k))
    out = tmp_path / "sweep.csv"
    result = sweep(["--data", str(small_demo), "--checkpoint", f"a={tiny_checkpoints[0]}",
                    "--checkpoint", f"m={merged}", "--r", "0,8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert calls == [[[0, 8], [8]]]  # one loop; r = 0 timed once for the architecture
    assert sorted(read) == sorted([str(tiny_checkpoints[0]), str(merged)])  # each read once
    rows = {(row["run"], int(row["r"])): row for row in csv.DictReader(out.open())}
    assert rows["a", 0]["samples_per_s"] == rows["m", 0]["samples_per_s"]
    assert rows["a", 0]["speedup"] == rows["m", 0]["speedup"] == "1.00"
    assert rows["m", 8]["merging"] == "constant, proportional attention off"
    reference = float(rows["a", 0]["samples_per_s"])
    for run in ("a", "m"):
        assert float(rows[run, 8]["speedup"]) == pytest.approx(
            float(rows[run, 8]["samples_per_s"]) / reference, abs=0.01)


def test_the_csv_header_names_the_metric_and_an_older_table_is_resumed(
    small_demo, tiny_checkpoints, tmp_path
):
    out = tmp_path / "sweep.csv"
    args = ["--data", str(small_demo), "--checkpoint", f"a={tiny_checkpoints[0]}", "--out",
            str(out)]
    assert sweep([*args, "--r", "0"]).exit_code == 0
    header = out.read_text().splitlines()[0].split(",")
    assert header[:5] == ["run", "method", "r", "accuracy", "metric_std"]
    first = next(csv.DictReader(out.open()))
    # A table from before the metric was named says `metric`: still resumed, then renamed.
    out.write_text(out.read_text().replace("accuracy", "metric", 1))
    result = sweep([*args, "--r", "0,8"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[3] == "accuracy" and [row["r"] for row in rows] == ["0", "8"]
    timing = ("samples_per_s", "speedup", "tokens", "gflops", "batch")
    assert {k: v for k, v in rows[0].items() if k not in timing} == {
        k: v for k, v in first.items() if k not in timing}  # kept, not scored again

    checkpoint = tmp_path / "map.pt"
    manifest = load_manifest(small_demo)
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=manifest.label_names)
    save_checkpoint(checkpoint, model, metric="mAP")
    mapped = tmp_path / "map.csv"
    result = sweep(["--data", str(small_demo), "--checkpoint", f"m={checkpoint}", "--r", "0",
                    "--out", str(mapped)])
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(mapped.open())
    plain = evaluate_checkpoint(checkpoint, manifest, r=0)
    assert float(row["mAP"]) == pytest.approx(plain.metrics.mAP, abs=5e-5)
