"""AST's protocol, second pass: teachers never chosen on a student's evaluation clips, and AST's
published input statistics (`norm_stats: ast`) applied, recorded and scored with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.models.checkpoints import read_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.training import loop as loop_module
from fastast_cli.training.config import RECIPES_DIR, TrainConfig, read_recipe
from fastast_cli.training.loop import Trainer
from fastast_cli.training.resume import check_resumable

pytestmark = pytest.mark.usefixtures("one_thread")

# AST's constants (egs/esc50/run_esc.sh, egs/speechcommands/run_sc.sh, egs/audioset/run.sh:
# dataset_mean, dataset_std), typed here rather than imported.
AST_ESC50 = (-6.6268077, 5.358466)
AST_SPEECHCOMMANDS = (-6.845978, 5.5654526)
AST_AUDIOSET = (-4.2677393, 4.5689974)

# Datasets whose `prepare` writes a validation split: there best.pt is chosen on `valid` and
# reported on `test`. Everywhere else (ESC-50's folds, balanced AudioSet, the demo's folds)
# best.pt is chosen on the very clips a student is reported on.
SELECTS_ON_VALID = {"data/speechcommands"}


# --- teachers ---------------------------------------------------------------------------------


def test_no_shipped_recipe_takes_a_teacher_chosen_on_the_students_evaluation_clips():
    recipes = {path.stem: read_recipe(path) for path in sorted(RECIPES_DIR.glob("*.yaml"))}
    teachers = {name: values for name, values in recipes.items()
                if values.get("teacher_checkpoint")}
    assert {"esc50-tome-kd", "audioset-tome-kd", "demo-distill"} <= set(teachers)
    chosen = {name: Path(values["teacher_checkpoint"]).name for name, values in teachers.items()
              if values["data"] not in SELECTS_ON_VALID}
    assert chosen == {"esc50-tome-kd": "last.pt", "audioset-tome-kd": "averaged.pt",
                      "demo-distill": "last.pt"}
    assert "{fold}" in teachers["esc50-tome-kd"]["teacher_checkpoint"]


# --- input statistics -------------------------------------------------------------------------


def test_the_recipes_of_asts_datasets_use_asts_statistics():
    for name in ("esc50", "esc50-tome", "esc50-tome-kd", "esc50-cnn-teacher", "speechcommands",
                 "speechcommands-tome-kd", "audioset", "audioset-tome", "audioset-cnn-teacher"):
        assert read_recipe(name)["norm_stats"] == "ast", name
    assert "norm_stats" not in read_recipe("demo")  # own data: measured
    assert TrainConfig().norm_stats == "measured"


@pytest.fixture()
def esc50_like(small_demo, tmp_path) -> Path:
    """The small demo set (two folds and more) relabelled as an ESC-50 preparation."""
    root = tmp_path / "esc50"
    shutil.copytree(small_demo.parent, root, ignore=shutil.ignore_patterns("cache"))
    manifest = root / "manifest.yaml"
    text = manifest.read_text()
    assert "dataset: demo\n" in text
    manifest.write_text(text.replace("dataset: demo\n", "dataset: esc50\n"))
    return manifest


def test_manifest_gives_asts_constants_for_every_fold(esc50_like, small_demo):
    manifest = load_manifest(esc50_like)
    assert manifest.norm_stats(1) != manifest.norm_stats(2)  # measured: per fold
    assert manifest.norm_stats(1, "ast") == manifest.norm_stats(2, "ast") == AST_ESC50
    for dataset, constants in (("speechcommands", AST_SPEECHCOMMANDS),
                               ("audioset", AST_AUDIOSET)):
        manifest.dataset = dataset
        assert manifest.norm_stats(None, "ast") == constants
    with pytest.raises(FastASTError, match="not for this 'demo' dataset"):
        load_manifest(small_demo).norm_stats(1, "ast")


def tiny_config(data: Path, out: Path, **values) -> TrainConfig:
    return TrainConfig(model="ast", size="tiny", depth=1, fstride=16, tstride=16, data=str(data),
                       out=str(out), epochs=1, batch_size=16, lr=2e-4, loss="ce",
                       num_workers=0, device="cpu", lr_start=99, fold=2, **values)


def test_a_run_with_asts_statistics_normalizes_records_and_scores_with_them(esc50_like, tmp_path):
    """Every clip is (fbank - mean) / (2 std) with AST's ESC-50 constants, on fold 2 as on any
    fold; the checkpoint records them, and evaluation reads them back from it."""
    manifest = load_manifest(esc50_like)
    trainer = Trainer(tiny_config(esc50_like, tmp_path / "run", norm_stats="ast"),
                      loop_module.Ranks(), torch.device("cpu"), loop_module.SilentReporter())
    assert (trainer.mean, trainer.std) == AST_ESC50
    assert (trainer.train_items.dataset.mean, trainer.train_items.dataset.std) == AST_ESC50
    measured = manifest.dataset_for("eval", 2)  # the fold's own stats
    assert (measured.mean, measured.std) == manifest.norm_stats(2) != AST_ESC50
    mean, std = AST_ESC50
    raw = measured[0][0] * 2 * measured.std + measured.mean  # the un-normalized fbank
    torch.testing.assert_close(trainer.eval_set[0][0], (raw - mean) / (2 * std),
                               atol=1e-5, rtol=0)
    trainer.run(resume=False)
    for name in ("best.pt", "last.pt"):
        meta = read_checkpoint(tmp_path / "run" / name)["meta"]
        assert (meta["mean"], meta["std"], meta["norm_stats"]) == (*AST_ESC50, "ast")
    model = load_classifier(tmp_path / "run" / "best.pt")
    assert model.input_spec().stats == AST_ESC50


def test_a_measured_run_records_the_folds_own_statistics(esc50_like, tmp_path):
    manifest = load_manifest(esc50_like)
    trainer = Trainer(tiny_config(esc50_like, tmp_path / "run"), loop_module.Ranks(),
                      torch.device("cpu"), loop_module.SilentReporter())
    assert (trainer.mean, trainer.std) == manifest.norm_stats(2)
    assert trainer._model_meta()["norm_stats"] == "measured"


def test_asts_statistics_on_own_data_is_one_clear_error(small_demo, tmp_path):
    result = CliRunner().invoke(app, [
        "train-teacher", "--recipe", "demo", "--data", str(small_demo), "--norm-stats", "ast",
        "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "AST published input statistics for audioset, esc50, speechcommands only" in (
        " ".join(result.output.split()))
    assert "Traceback" not in result.output and not (tmp_path / "run" / "best.pt").exists()
    with pytest.raises(FastASTError, match="norm_stats must be measured or ast"):
        tiny_config(small_demo, tmp_path, norm_stats="mine").check()


def test_a_run_saved_before_norm_stats_existed_resumes_only_as_measured(tmp_path):
    saved = {"lr": 1e-5}  # a train_config written before the setting existed
    check_resumable(tmp_path / "last.pt", saved, {"lr": 1e-5, "norm_stats": "measured"}, 0)
    with pytest.raises(FastASTError, match=r"other settings \(norm_stats\)"):
        check_resumable(tmp_path / "last.pt", saved, {"lr": 1e-5, "norm_stats": "ast"}, 0)
