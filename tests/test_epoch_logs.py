"""ESC-50's two reported numbers from the runs' per-epoch logs: AST's best epoch of the
fold-mean curve (get_esc_result.py) and the last epoch, each named by `evaluate --folds`."""

from __future__ import annotations

import statistics

import pytest
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation.epoch_logs import (
    BEST_EPOCH,
    LAST_EPOCH,
    fold_epoch_results,
    read_epoch_log,
)
from fastast_cli.models.checkpoints import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# accuracy per epoch of three folds: the fold mean is 0.80, 0.90, 0.85, 0.84 → best epoch 2.
CURVES = [
    {1: 0.70, 2: 0.95, 3: 0.90, 4: 0.86},
    {1: 0.85, 2: 0.85, 3: 0.80, 4: 0.82},
    {1: 0.85, 2: 0.90, 3: 0.85, 4: 0.84},
]


def write_log(path, curve, extra_rows=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,train_loss,lr,accuracy,mAP,mAUC,d_prime,samples_per_s,seconds"]
    lines += [f"{epoch},0.5,0.001,{value},0.5,0.5,0.1,100,1" for epoch, value in curve.items()]
    path.write_text("\n".join(lines) + "\n" + extra_rows)


def test_best_epoch_of_the_fold_mean_and_the_last_epoch():
    best, last = fold_epoch_results(CURVES)
    assert (best.name, best.epoch) == (BEST_EPOCH, 2)
    assert best.mean == pytest.approx(0.90)
    assert best.std == pytest.approx(statistics.stdev([0.95, 0.85, 0.90]))
    assert (last.name, last.epoch) == (LAST_EPOCH, 4)
    assert last.mean == pytest.approx(0.84)
    assert last.std == pytest.approx(statistics.stdev([0.86, 0.82, 0.84]))
    # only epochs every fold logged count; a tie keeps the first epoch
    best, last = fold_epoch_results([{1: 0.5, 2: 0.7, 3: 0.9}, {1: 0.5, 2: 0.7}])
    assert (best.epoch, last.epoch, best.mean) == (2, 2, pytest.approx(0.7))
    assert fold_epoch_results([{1: 0.5, 2: 0.5}])[0].epoch == 1
    assert fold_epoch_results([{1: 0.5}, {2: 0.5}]) == []


def test_reading_a_log_skips_bad_rows_and_keeps_an_epochs_last_row(tmp_path):
    log = tmp_path / "log.csv"
    write_log(log, {1: 0.5, 2: 0.6}, "2,0.4,0.001,0.65,0,0,0,1,1\nx,1,1,1,1,1,1,1,1\n"
                                       "3,0.4,0.001,nan,0,0,0,1,1\n")
    assert read_epoch_log(log, "accuracy") == {1: 0.5, 2: 0.65}
    assert read_epoch_log(log, "no-such-metric") == {}
    assert read_epoch_log(tmp_path / "missing.csv", "accuracy") == {}


def test_evaluate_folds_prints_both_numbers_named(small_demo, tmp_path):
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=load_manifest(small_demo).label_names)
    for fold, curve in zip((1, 2, 3), CURVES, strict=True):
        save_checkpoint(tmp_path / f"run{fold}" / "last.pt", model)
        write_log(tmp_path / f"run{fold}" / "log.csv", curve)
    result = CliRunner().invoke(app, [
        "evaluate", "--checkpoint", str(tmp_path / "run{fold}" / "last.pt"),
        "--data", str(small_demo), "--folds", "1-3", "--device", "cpu", "--quiet"],
        env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    best_std = statistics.stdev([0.95, 0.85, 0.90])
    last_std = statistics.stdev([0.86, 0.82, 0.84])
    assert f"{BEST_EPOCH}: epoch 2, 0.9000 ± {best_std:.4f}" in text
    assert f"{LAST_EPOCH}: epoch 4, 0.8400 ± {last_std:.4f}" in text
    (tmp_path / "run3" / "log.csv").unlink()
    result = CliRunner().invoke(app, [
        "evaluate", "--checkpoint", str(tmp_path / "run{fold}" / "last.pt"),
        "--data", str(small_demo), "--folds", "1-3", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "no per-epoch accuracy logged for fold 3" in " ".join(result.output.split())
