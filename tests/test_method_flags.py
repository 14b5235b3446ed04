"""`--method` on every command that runs a model: checked, stored in checkpoints, read back as
the default, named in tables and titles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.datafile import read_datafile
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.evaluate import evaluate_checkpoint
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.reduction import METHODS
from fastast_cli.models.reduction.settings import MergeSettings

pytestmark = pytest.mark.usefixtures("one_thread")

OTHER_METHODS = [name for name in METHODS if name != "tome"]


def run_cli(*args: str):
    return CliRunner().invoke(app, [*args])


def words(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


def tiny_checkpoint(path: Path, manifest, **meta) -> Path:
    torch.manual_seed(0)
    model = build_model("tiny", manifest.num_classes, target_length=manifest.target_length,
                        depth=2, fstride=16, tstride=16, labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    return save_checkpoint(path, model, mean=mean, std=std, metric="accuracy", **meta)


def record(method: str | None, r: int = 6, **extra) -> dict:
    """A `meta["merging"]` record (method None: one written before methods existed)."""
    stored = {"r": r, "schedule": "constant", "proportional_attention": False, **extra}
    return stored if method is None else {"method": method, **stored}


def test_settings_round_trip_the_method_and_its_options() -> None:
    settings = MergeSettings(4, method="random", method_options={"seed": 3})
    back = MergeSettings.from_meta({"merging": settings.to_meta()})
    assert (back.method, back.method_options, back.r) == ("random", {"seed": 3}, 4)
    assert MergeSettings.from_meta({"merging": record(None)}).method == "tome"  # older records
    assert MergeSettings.from_meta({"r": 4}).method == "tome"  # before `merging` existed
    assert back.describe().startswith("random r=4 ")
    assert MergeSettings(8, method="pitome").describe().startswith("PiToMe r=8 constant")
    # another method starts from its own defaults; the same method keeps its options
    assert back.overridden(method="tofu").method_options is None
    assert back.overridden(method="random", r=2).method_options == {"seed": 3}


@pytest.mark.parametrize("method", OTHER_METHODS)
def test_load_classifier_applies_the_stored_method_and_the_flag_overrides_it(
        small_demo, tmp_path, method):
    manifest = load_manifest(small_demo)
    path = tiny_checkpoint(tmp_path / "m.pt", manifest, merging=record(method))
    model = load_classifier(path)
    assert model.reduction_method == method and model.merge_settings.method == method
    assert load_classifier(path, method="tome").reduction_method == "tome"
    older = tiny_checkpoint(tmp_path / "old.pt", manifest, merging=record(None))
    assert load_classifier(older).reduction_method == "tome"
    assert load_classifier(older, method=method).reduction_method == method


def test_stored_method_options_are_reapplied(small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    path = tiny_checkpoint(tmp_path / "m.pt", manifest,
                           merging=record("random", method_options={"seed": 7}))
    assert load_classifier(path).reduction_options == {"seed": 7}
    unknown = tiny_checkpoint(tmp_path / "u.pt", manifest, merging=record("sideways"))
    with pytest.raises(FastASTError, match="token merging settings"):
        load_classifier(unknown)


def test_evaluate_defaults_to_the_stored_method_and_names_it(small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    path = tiny_checkpoint(tmp_path / "m.pt", manifest, merging=record("evit"))
    stored = evaluate_checkpoint(path, manifest)
    explicit = evaluate_checkpoint(path, manifest, method="evit")
    tome = evaluate_checkpoint(path, manifest, method="tome")
    torch.testing.assert_close(stored.logits, explicit.logits)
    assert not torch.allclose(stored.logits, tome.logits)  # the method really ran
    common = ["evaluate", "--checkpoint", str(path), "--data", str(small_demo), "--device", "cpu"]
    result = run_cli(*common)
    assert result.exit_code == 0, result.output
    assert "EViT r=6 constant, proportional attention off (from the checkpoint)" in words(
        result.output)
    result = run_cli(*common, "--method", "tofu")
    assert result.exit_code == 0, result.output
    assert "ToFu r=6 constant, proportional attention off (set by flags)" in words(result.output)


def test_predict_and_visualize_take_the_method(small_demo, tmp_path):
    manifest = load_manifest(small_demo)
    path = str(tiny_checkpoint(tmp_path / "m.pt", manifest, merging=record("tome", r=4)))
    clip = str(read_datafile(manifest.datafile("eval"))[0].wav)
    result = run_cli("predict", clip, "--checkpoint", path, "--device", "cpu",
                     "--method", "pitome")
    assert result.exit_code == 0, result.output
    assert "PiToMe r=4 constant" in words(result.output)
    image = tmp_path / "groups.png"
    result = run_cli("visualize", clip, "--checkpoint", path, "--out", str(image), "--device",
                     "cpu", "--method", "random")
    assert result.exit_code == 0, result.output
    assert image.stat().st_size > 0


@pytest.mark.parametrize("command", ["evaluate", "predict", "visualize", "export", "sweep",
                                     "train-teacher", "distill"])
def test_an_unknown_method_is_one_line_and_exit_2(small_demo, tmp_path, command):
    manifest = load_manifest(small_demo)
    path = str(tiny_checkpoint(tmp_path / "m.pt", manifest))
    clip = str(read_datafile(manifest.datafile("eval"))[0].wav)
    args = {
        "evaluate": ["--checkpoint", path, "--data", str(small_demo)],
        "predict": [clip, "--checkpoint", path],
        "visualize": [clip, "--checkpoint", path, "--out", str(tmp_path / "v.png")],
        "export": [path, "--out", str(tmp_path / "m.onnx")],
        "sweep": ["--checkpoint", path, "--data", str(small_demo), "--r", "0,2"],
        "train-teacher": ["--data", str(small_demo), "--out", str(tmp_path / "run")],
        "distill": ["--data", str(small_demo), "--teacher", path, "--out", str(tmp_path / "kd")],
    }[command]
    result = run_cli(command, *args, "--method", "sideways")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'sideways'" in lines[0]
    assert all(name in lines[0] for name in METHODS)
    assert not (tmp_path / "run").exists() and not (tmp_path / "kd").exists()


def tiny_recipe(path: Path, **values) -> Path:
    """A recipe for a one-epoch tiny AST run on the demo set."""
    recipe = {"base": "demo", "depth": 2, "epochs": 1, "device": "cpu", "lr_start": 99,
              **values}
    path.write_text("".join(f"{key}: {value}\n" for key, value in recipe.items()))
    return path


def test_a_run_trained_with_a_method_records_it_and_evaluate_defaults_to_it(small_demo,
                                                                            tmp_path):
    recipe = tiny_recipe(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    result = run_cli("distill", "--recipe", str(recipe), "--data", str(small_demo), "--out",
                     str(run), "--teacher", "none", "--r", "3", "--method", "pitome")
    assert result.exit_code == 0, result.output
    manifest = load_manifest(small_demo)
    model = load_classifier(run / "best.pt")
    assert model.merge_settings.to_meta() == {"method": "pitome", "r": 3, "schedule": "constant",
                                              "proportional_attention": False}
    assert model.reduction_method == "pitome" and model.merge_settings.source == "checkpoint"
    stored = evaluate_checkpoint(run / "best.pt", manifest)
    assert stored.merging.method == "pitome"
    torch.testing.assert_close(
        stored.logits, evaluate_checkpoint(run / "best.pt", manifest, method="pitome").logits)


def test_the_recipe_key_method_is_used_and_checked(small_demo, tmp_path):
    run = tmp_path / "run"
    recipe = tiny_recipe(tmp_path / "evit.yaml", method="evit", r=2)
    result = run_cli("train-teacher", "--recipe", str(recipe), "--data", str(small_demo),
                     "--out", str(run))
    assert result.exit_code == 0, result.output
    assert load_classifier(run / "best.pt").merge_settings.method == "evit"
    bad = tiny_recipe(tmp_path / "bad.yaml", method="sideways")
    result = run_cli("train-teacher", "--recipe", str(bad), "--data", str(small_demo),
                     "--out", str(tmp_path / "bad"))
    assert result.exit_code == 2 and "method must be one of tome, pitome" in words(result.output)
    assert not (tmp_path / "bad").exists()
