"""Numbers a researcher can trust: the reported split, fold-safe teachers, mixup-consistent
cached teacher logits, merging settings that travel with the checkpoint, metric notes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from data_fixtures import make_class_folders, no_progress  # noqa: F401
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.datafile import read_datafile
from fastast_cli.data.manifest import load_manifest
from fastast_cli.data.prepare import prepare_folder
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.evaluate import evaluate_checkpoint
from fastast_cli.evaluation.metrics import compute_metrics
from fastast_cli.models.checkpoints import read_checkpoint, save_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.training import loop as loop_module
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.loop import Mix, Trainer, train
from fastast_cli.training.provenance import data_record

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16}


def config(data: Path, out: Path, **values) -> TrainConfig:
    base = {**TINY, "data": str(data), "out": str(out), "epochs": 1, "batch_size": 8,
            "lr": 2e-4, "loss": "ce", "num_workers": 0, "device": "cpu", "lr_start": 99}
    return TrainConfig(**{**base, **values})


def tiny_checkpoint(path: Path, manifest, seed: int = 0, **meta) -> Path:
    torch.manual_seed(seed)
    model = build_model("tiny", manifest.num_classes, target_length=manifest.target_length,
                        depth=2, fstride=16, tstride=16, labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    return save_checkpoint(path, model, mean=mean, std=std, metric="accuracy", **meta)


@pytest.fixture(scope="module")
def three_splits(tmp_path_factory) -> Path:
    """A folder dataset with train, valid and test splits (3 classes)."""
    root = tmp_path_factory.mktemp("splits")
    src = make_class_folders(root / "src", {"low": 8, "mid": 8, "high": 8})
    prepare_folder(src, root / "data", ratios=(0.5, 0.25, 0.25), seed=0)
    return root / "data" / "manifest.yaml"


def run_cli(*args: str):
    return CliRunner().invoke(app, [*args])


def words(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


# --- 1. the reported split ------------------------------------------------------------------


def test_evaluate_reports_the_test_split_and_training_selects_on_valid(three_splits, tmp_path):
    manifest = load_manifest(three_splits)
    assert manifest.eval_split == "test" and manifest.selection_split == "valid"
    checkpoint = tiny_checkpoint(tmp_path / "m.pt", manifest)
    test = evaluate_checkpoint(checkpoint, manifest)
    assert test.split == "test"
    assert len(test.clips) == manifest.counts.get("test", len(test.clips))
    assert set(test.clips) != set(evaluate_checkpoint(checkpoint, manifest, split="valid").clips)
    result = run_cli("evaluate", "--checkpoint", str(checkpoint), "--data", str(three_splits),
                     "--device", "cpu", "--out", str(tmp_path / "ev"))
    assert result.exit_code == 0, result.output
    assert "test split" in words(result.output)
    assert json.loads((tmp_path / "ev/metrics.json").read_text())["split"] == "test"
    for name in ("per_class.csv", "predictions.csv"):
        assert {row["split"] for row in csv.DictReader((tmp_path / "ev" / name).open())} == {
            "test"}
    trainer = Trainer(config(three_splits, tmp_path / "run"), loop_module.Ranks(),
                      torch.device("cpu"), loop_module.SilentReporter())
    assert trainer.eval_set.datafile == manifest.datafile("valid")
    assert trainer.run(resume=False).split == "valid"
    assert json.loads((tmp_path / "run/summary.json").read_text())["split"] == "valid"


def test_an_empty_test_split_is_not_the_reported_one(three_splits):
    manifest = load_manifest(three_splits)
    manifest.counts["test"] = 0
    assert manifest.eval_split == "valid"


def test_sweep_scores_the_test_split_names_it_and_takes_split(three_splits, tmp_path):
    manifest = load_manifest(three_splits)
    checkpoint = tiny_checkpoint(tmp_path / "m.pt", manifest)
    common = ["sweep", "--device", "cpu", "--warmup", "0", "--runs", "1", "--data",
              str(three_splits), "--checkpoint", f"a={checkpoint}", "--r", "0,4"]
    out = tmp_path / "test.csv"
    result = run_cli(*common, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "test split" in words(result.output) and "timing batch" in words(result.output)
    rows = list(csv.DictReader(out.open()))
    assert {row["split"] for row in rows} == {"test"}
    assert {row["batch"] for row in rows} == {"8"}  # CPU default, printed and saved
    assert "a: constant, proportional attention on" in words(result.output)
    expected = evaluate_checkpoint(checkpoint, manifest, split="test").metrics.accuracy
    assert float(rows[0]["accuracy"]) == pytest.approx(expected, abs=5e-5)
    valid = run_cli(*common, "--out", str(out), "--split", "valid")  # same file: re-measured
    assert valid.exit_code == 0, valid.output
    rows = list(csv.DictReader(out.open()))
    assert {row["split"] for row in rows} == {"valid"}
    expected = evaluate_checkpoint(checkpoint, manifest, split="valid").metrics.accuracy
    assert float(rows[0]["accuracy"]) == pytest.approx(expected, abs=5e-5)
    assert run_cli(*common, "--split", "nope").exit_code == 2


# --- 2. fold-safe teachers --------------------------------------------------------------------


def test_checkpoints_record_fold_dataset_and_merging(small_demo, tmp_path):
    train(config(small_demo, tmp_path / "run", fold=2, r=3))
    meta = read_checkpoint(tmp_path / "run/best.pt")["meta"]
    manifest = load_manifest(small_demo)
    assert meta["fold"] == 2 and meta["data_identity"] == manifest.identity
    assert meta["merging"] == {"method": "tome", "r": 3, "schedule": "constant",
                               "proportional_attention": False}
    default_fold = read_checkpoint(tiny_checkpoint(tmp_path / "x.pt", manifest,
                                                   **data_record(manifest, None)))["meta"]
    assert default_fold["fold"] == manifest.default_fold


def test_a_teacher_of_another_fold_is_refused_and_fold_patterns_pick_the_right_one(
        small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    for fold in (1, 2):
        (tmp_path / f"teacher-fold{fold}").mkdir()
        tiny_checkpoint(tmp_path / f"teacher-fold{fold}/best.pt", manifest, seed=fold,
                        **data_record(manifest, fold))

    def trainer(fold, teacher):
        return Trainer(config(small_demo, tmp_path / f"s{fold}", fold=fold, teacher="ast",
                              teacher_checkpoint=str(teacher)),
                       loop_module.Ranks(), torch.device("cpu"), loop_module.SilentReporter())

    with pytest.raises(FastASTError, match="trained for fold 1.*fold 2's evaluation clips"):
        trainer(2, tmp_path / "teacher-fold1/best.pt")
    picked = trainer(2, tmp_path / "teacher-fold{fold}/best.pt")
    assert picked.teacher_path == str(tmp_path / "teacher-fold2/best.pt")
    assert trainer(1, tmp_path / "teacher-fold{fold}/best.pt").teacher_path.endswith(
        "teacher-fold1/best.pt")
    other = tiny_checkpoint(tmp_path / "other.pt", manifest,
                            data_identity="demo:0000", fold=2)
    with pytest.raises(FastASTError, match="another preparation"):
        trainer(2, other)


def test_fold_pattern_on_a_dataset_without_folds(three_splits, tmp_path):
    with pytest.raises(FastASTError, match="has no folds"):
        Trainer(config(three_splits, tmp_path / "s", teacher="ast",
                       teacher_checkpoint=str(tmp_path / "t{fold}.pt")),
                loop_module.Ranks(), torch.device("cpu"), loop_module.SilentReporter())


def test_the_esc50_kd_recipe_names_one_teacher_per_fold():
    from fastast_cli.training.config import read_recipe

    assert "{fold}" in read_recipe("esc50-tome-kd")["teacher_checkpoint"]


# --- 3. cached teacher logits follow mixup ----------------------------------------------------


def test_mix_of_per_clip_values():
    values = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    mix = Mix(torch.tensor([0, 2]), torch.tensor([1, 2]), torch.tensor([0.25, 1.0],
                                                                      dtype=torch.float64))
    torch.testing.assert_close(mix.apply(values), torch.tensor([[0.25, 1.5], [4.0, 4.0]]))


def test_cached_teacher_logits_are_mixed_like_the_input(small_demo, tmp_path, monkeypatch):
    manifest = load_manifest(small_demo)
    teacher = tiny_checkpoint(tmp_path / "teacher.pt", manifest, **data_record(manifest, None))
    student = config(small_demo, tmp_path / "student", teacher="ast",
                     teacher_checkpoint=str(teacher), teacher_logits="cached", mixup=1.0)
    trainer = Trainer(student, loop_module.Ranks(), torch.device("cpu"),
                      loop_module.SilentReporter())
    seen = []
    real = loop_module.distillation_loss
    monkeypatch.setattr(loop_module, "distillation_loss", lambda logits, target, taught, *a:
                        seen.append((target, taught)) or real(logits, target, taught, *a))
    mixes = []
    real_logits = trainer._teacher_logits
    monkeypatch.setattr(trainer, "_teacher_logits",
                        lambda fbank, mix, view: mixes.append(mix) or real_logits(fbank, mix, view))
    trainer.run(resume=False)
    cache = trainer.cached_logits
    targets = trainer.train_items.dataset.targets
    mixed = 0
    for (target, taught), mix in zip(seen, mixes, strict=True):
        lam = mix.lam.float()[:, None]
        expected = lam * cache[mix.index] + (1 - lam) * cache[mix.partner]
        torch.testing.assert_close(taught, expected)
        # the partner and λ are those the dataset mixed the input and the labels with
        torch.testing.assert_close(target, lam * targets[mix.index] + (1 - lam)
                                   * targets[mix.partner])
        mixed += int((mix.partner != mix.index).sum())
    assert mixed > len(trainer.train_items) // 2


# --- 4. merging settings travel with the checkpoint -------------------------------------------


def test_load_classifier_defaults_to_the_stored_merging(small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    stored = {"method": "tome", "r": 5, "schedule": "decreasing",
              "proportional_attention": False}
    new = load_classifier(tiny_checkpoint(tmp_path / "new.pt", manifest, merging=stored))
    assert sum(new.r_schedule) == 10 and new.r_schedule[0] == 10
    assert new.proportional_attention is False and new.merge_settings.source == "checkpoint"
    flags = load_classifier(tmp_path / "new.pt", 2, proportional_attention=True)
    assert flags.r_schedule == [4, 0] and flags.proportional_attention  # decreasing kept
    # saved before the `merging` record: its top-level r and schedule, proportional attention
    # from train_config (last.pt), else on (training's default then)
    old = load_classifier(tiny_checkpoint(tmp_path / "old.pt", manifest, r=5,
                                          schedule="constant"))
    assert old.r_schedule == [5, 5] and old.proportional_attention
    assert old.merge_settings.source == "checkpoint"
    old_last = load_classifier(tiny_checkpoint(
        tmp_path / "old_last.pt", manifest, r=3, schedule="decreasing",
        train_config={"r": 3, "proportional_attention": False}))
    assert old_last.r_schedule == [6, 0] and old_last.proportional_attention is False
    never = load_classifier(tiny_checkpoint(tmp_path / "never.pt", manifest))  # records no r
    assert never.r_schedule == [0, 0] and never.proportional_attention
    assert never.merge_settings.source == "default"
    unmerged = {**stored, "r": 0}  # trained without merging: merged later off the shelf
    plain = load_classifier(tiny_checkpoint(tmp_path / "plain.pt", manifest, merging=unmerged), 4)
    assert plain.r_schedule == [8, 0] and plain.proportional_attention
    assert TrainConfig().proportional_attention is False  # ToMe trains without it


def test_evaluate_uses_and_names_the_stored_merging(small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    stored = {"method": "tome", "r": 6, "schedule": "constant", "proportional_attention": False}
    checkpoint = tiny_checkpoint(tmp_path / "m.pt", manifest, merging=stored)
    default = evaluate_checkpoint(checkpoint, manifest)
    explicit = evaluate_checkpoint(checkpoint, manifest, r=6, proportional_attention=False)
    plain = evaluate_checkpoint(checkpoint, manifest, r=0)
    torch.testing.assert_close(default.logits, explicit.logits)
    assert not torch.allclose(default.logits, plain.logits)
    result = run_cli("evaluate", "--checkpoint", str(checkpoint), "--data", str(small_demo),
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    text = words(result.output)
    assert "r=6" in text and "proportional attention off" in text
    assert "from the checkpoint" in text


def test_predict_uses_the_stored_merging_and_flags_override_it(small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    stored = {"method": "tome", "r": 6, "schedule": "constant", "proportional_attention": False}
    checkpoint = str(tiny_checkpoint(tmp_path / "m.pt", manifest, merging=stored))
    clip = str(read_datafile(manifest.datafile("eval"))[0].wav)
    common = ["predict", clip, "--checkpoint", checkpoint, "--device", "cpu"]
    result = run_cli(*common)
    assert result.exit_code == 0, result.output
    assert ("r=6 constant, proportional attention off (from the checkpoint)"
            in words(result.output))
    result = run_cli(*common, "--schedule", "decreasing", "--proportional-attention")
    assert result.exit_code == 0, result.output
    assert "r=6 decreasing, proportional attention on (set by flags)" in words(result.output)
    result = run_cli(*common, "--schedule", "sideways")  # refused by the option's choices
    assert result.exit_code == 2 and "'constant', 'decreasing'" in words(result.output)


# --- 7. metric notes --------------------------------------------------------------------------


def test_classes_without_positives_are_named():
    targets = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 0]]).numpy()
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.5], [0.6, 0.3, 0.1]]).numpy()
    metrics = compute_metrics(scores, targets)
    assert metrics.classes_without_positives == [2]
    assert metrics.mAP == pytest.approx(1.0)  # sklearn's macro mean would give 2/3


def test_evaluate_notes_classes_left_out_of_map(three_splits, tmp_path, monkeypatch):
    manifest = load_manifest(three_splits)
    checkpoint = tiny_checkpoint(tmp_path / "m.pt", manifest)
    evaluation = evaluate_checkpoint(checkpoint, manifest)
    assert evaluation.excluded_classes == []
    evaluation.targets[:, 0] = 0
    evaluation.metrics = compute_metrics(evaluation.logits.numpy(), evaluation.targets.numpy())
    assert evaluation.excluded_classes == [manifest.label_names[0]]
    assert "mAP averages 2 of 3 classes" in evaluation.notes()[0]


def test_evaluate_scores_a_checkpoint_on_its_own_fold_only(small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    checkpoint = tiny_checkpoint(tmp_path / "f3.pt", manifest, **data_record(manifest, 3))
    assert evaluate_checkpoint(checkpoint, manifest).fold == 3  # its own fold by default
    with pytest.raises(FastASTError, match="trained for fold 3, so fold 1's evaluation clips"):
        evaluate_checkpoint(checkpoint, manifest, fold=1)
    result = run_cli("evaluate", "--checkpoint", str(checkpoint), "--data", str(small_demo),
                     "--fold", "2", "--device", "cpu")
    assert result.exit_code == 2 and "trained for fold 3" in words(result.output)
    other = tiny_checkpoint(tmp_path / "other.pt", manifest, data_identity="demo:0", fold=1)
    with pytest.raises(FastASTError, match="another preparation"):
        evaluate_checkpoint(other, manifest, fold=1)


def test_timing_batch_is_the_largest_that_fits():
    from fastast_cli.evaluation.throughput import (
        ACCELERATOR_BATCHES,
        default_batch_size,
        largest_fitting,
    )

    tried = []
    assert largest_fitting(ACCELERATOR_BATCHES, lambda n: tried.append(n) or n <= 64) == 64
    assert tried == [256, 128, 64]  # largest first, stops at the first that fits
    assert largest_fitting(ACCELERATOR_BATCHES, lambda n: False) == ACCELERATOR_BATCHES[-1]
    assert default_batch_size(build_model("tiny", 3, target_length=64), "cpu") == 8


def test_a_damaged_merging_record_is_one_clear_error(small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    for r in (2.5, "x", [1]):
        path = tiny_checkpoint(tmp_path / "bad.pt", manifest,
                               merging={"method": "tome", "r": r, "schedule": "constant",
                                        "proportional_attention": False})
        with pytest.raises(FastASTError, match="token merging settings"):
            load_classifier(path)
    with pytest.raises(FastASTError, match="unknown r schedule"):
        load_classifier(path, 2, schedule="sideways")
