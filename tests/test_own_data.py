"""Your own recordings: `prepare folder` (lengths report, --out default, label patterns), the
shipped `folder` recipe (settings picked from the data and the machine), the plan line and time
estimate, and unsetting a recipe's values from the command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from data_fixtures import make_class_folders, no_progress, write_tone  # noqa: F401
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.data.datafile import read_datafile, read_labels_csv
from fastast_cli.data.manifest import load_manifest
from fastast_cli.data.prepare import folder as folder_module
from fastast_cli.data.prepare import prepare_folder
from fastast_cli.errors import FastASTError
from fastast_cli.training.auto import DataShape, Machine, resolve_auto
from fastast_cli.training.config import load_config
from fastast_cli.training.plan import TimeEstimate

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(*args: str):
    return CliRunner().invoke(app, [*args])


def words(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    """A prepared class-per-folder set: 3 classes × 8 clips of 0.5 s."""
    root = tmp_path_factory.mktemp("own")
    make_class_folders(root / "src", {"cat": 8, "dog": 8, "rain": 8})
    prepare_folder(root / "src", root / "data")
    return root / "data"


# --- the folder recipe ----------------------------------------------------------------------


def test_folder_data_without_a_recipe_gets_the_folder_recipe_and_its_auto_picks(folder_data,
                                                                                tmp_path):
    config = load_config(None, {"data": str(folder_data), "out": str(tmp_path / "run")})
    assert set(config.auto) == {"size", "depth", "fstride", "tstride", "loss", "metric",
                                "epochs", "batch_size", "lr", "num_workers"}
    cpu = resolve_auto(config, DataShape(18, True), Machine("cpu", 2))
    assert (cpu.size, cpu.depth, cpu.fstride, cpu.tstride) == ("tiny", 4, 16, 16)
    assert (cpu.loss, cpu.metric, cpu.num_workers, cpu.batch_size) == ("ce", "accuracy", 0, 8)
    assert cpu.epochs == 40  # 8000 clips seen / 18 clips, capped at 40
    assert resolve_auto(config, DataShape(4000, True), Machine("cpu", 2)).epochs == 10
    assert resolve_auto(config, DataShape(400, True), Machine("cpu", 2)).epochs == 20
    multi = resolve_auto(config, DataShape(400, False), Machine("cpu", 8))
    assert (multi.loss, multi.metric, multi.num_workers) == ("bce", "mAP", 4)
    gpu = resolve_auto(config, DataShape(400, True), Machine("cuda", 16))
    assert (gpu.size, gpu.depth, gpu.fstride, gpu.num_workers) == ("small", 12, 10, 8)
    tuned = load_config(None, {"data": str(folder_data), "out": "x", "pretrained": "w.pth",
                               "epochs": 3, "size": "small"})
    picked = resolve_auto(tuned, DataShape(400, True), Machine("cpu", 2))
    assert (picked.size, picked.depth, picked.fstride, picked.epochs) == ("small", 12, 10, 3)
    assert "epochs" not in tuned.auto and "size" not in tuned.auto  # flags replace auto


def test_auto_takes_the_shape_of_pretrained_ast_weights(folder_data, tmp_path):
    from fastast_cli import build_model
    from fastast_cli.models.checkpoints import save_checkpoint

    own = save_checkpoint(tmp_path / "own.pt", build_model("tiny", 3, target_length=48, depth=2,
                                                           fstride=16, tstride=12))
    config = load_config(None, {"data": str(folder_data), "out": "x", "pretrained": str(own)})
    picked = resolve_auto(config, DataShape(18, True), Machine("cpu", 2))
    assert (picked.size, picked.depth, picked.fstride, picked.tstride) == ("tiny", 2, 16, 12)
    assert (picked.lr, picked.epochs) == (5e-5, 25)  # fine-tuning: 3000 / 18 clips, capped


def test_a_run_on_folder_data_prints_its_plan_and_saves_the_picked_settings(folder_data,
                                                                            tmp_path):
    run = tmp_path / "run"
    result = run_cli("train-teacher", "--data", str(folder_data), "--out", str(run),
                     "--epochs", "1", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    text = words(result.output)
    assert "recipe: folder (named by the manifest" in text
    assert "auto (cpu," in text and "single-label clips" in text and "loss ce" in text
    plan = next(line for line in result.output.split("\n\n")[0].splitlines()
                if line.startswith("plan:"))
    assert plan.startswith("plan: tiny AST (4 blocks")
    assert ("parameters; 18 training clips, 3 valid clips of 0.48 s; ce loss, 1 epoch × 3 "
            "steps of 8; cpu") in text
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["size"], saved["depth"], saved["loss"], saved["metric"]) == (
        "tiny", 4, "ce", "accuracy")
    assert saved["epochs"] == 1 and "epochs" not in saved["auto"]


def test_the_time_estimate_comes_after_the_first_steps_and_warns_of_hours_on_a_cpu():
    import torch

    now = [0.0]

    def clock() -> float:
        return now[0]

    estimate = TimeEstimate(torch.device("cpu"), clock)  # a model that is not the smallest
    lines = []
    for _ in range(10):
        now[0] += 2.0  # 2 s per step
        lines.append(estimate.step_done(steps_left=3000))
    said = [line for line in lines if line]
    assert said == ["estimated time: 1.7 h for the 3000 steps left (2.00 s per step; "
                    "validation not included)"]
    assert estimate.warning and estimate.warning.startswith("warning: this run will take about "
                                                            "1.7 h on this CPU")
    assert "--size tiny" in estimate.warning
    short = TimeEstimate(torch.device("cpu"), clock)
    for _ in range(10):
        now[0] += 0.1
        short.step_done(steps_left=100)
    assert short.done and short.warning is None


# --- unsetting recipe values ----------------------------------------------------------------


def test_teacher_none_wins_over_a_recipes_teacher_checkpoint(tmp_path):
    common = {"data": "data/demo", "out": str(tmp_path / "run")}
    config = load_config("demo-distill", {**common, "teacher": "none"})
    assert config.teacher == "none" and config.teacher_checkpoint is None
    config = load_config("demo-distill", {**common, "teacher": "auto",
                                          "teacher_checkpoint": "none"})
    assert config.teacher_checkpoint is None and config.teacher == "auto"
    assert load_config("demo", {**common, "pretrained": "none"}).pretrained is None
    with pytest.raises(FastASTError, match="teacher none, but a teacher checkpoint"):
        load_config("demo-distill", {**common, "teacher": "none",
                                     "teacher_checkpoint": "t.pt"})


def test_a_saved_config_with_auto_settings_reads_back_as_a_recipe(folder_data, tmp_path):
    config = load_config(None, {"data": str(folder_data), "out": "x"})
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(config.to_dict()))
    again = load_config(saved, {})
    assert again.auto == config.auto
    saved.write_text("auto: [colour]\n")
    with pytest.raises(FastASTError, match="auto = \\['colour'\\] must list settings"):
        load_config(saved, {"data": "d", "out": "x"})


# --- prepare folder: lengths, --out, label patterns ----------------------------------------


def test_prepare_folder_reports_clip_lengths_and_suggests_elastic(tmp_path):
    src = tmp_path / "src"
    for label, freq in (("a", 300), ("b", 900)):
        for i in range(6):
            write_tone(src / label / f"short_{i}.wav", seconds=0.2, freq=freq, seed=i)
        for i in range(2):
            seconds = 6.0 if (label, i) == ("b", 1) else 3.0
            write_tone(src / label / f"long_{i}.wav", seconds=seconds, freq=freq, seed=10 + i)
    report = prepare_folder(src, tmp_path / "out")
    # the 95th percentile of 12 × 0.2, 3 × 3 and 6 s: 3 + 0.25 · 3 = 3.75 s → 373 frames → 376
    assert load_manifest(tmp_path / "out").target_length == 376
    notes = "\n".join(report.notes)
    assert ("clip lengths: 0.20 s min, 0.20 s median, 3.75 s 95th percentile, 6.00 s max; "
            "75% under 0.40 s") in notes
    # the 6-s clip (599 frames) is cut; the 0.2-s clips (18 frames) are mostly padding
    assert ("target length 376 frames (3.76 s): 1 of 16 clips cut (their end dropped), 12 "
            "padded by more than half (75%)") in notes
    assert "train with --elastic" in notes
    even = make_class_folders(tmp_path / "even", {"x": 4, "y": 4})
    assert not any("--elastic" in note for note in prepare_folder(even, tmp_path / "o2").notes)


def test_prepare_folder_out_defaults_to_data_and_the_source_name(tmp_path):
    make_class_folders(tmp_path / "My Birds", {"owl": 4, "crow": 4})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = run_cli("prepare", "folder", "--src", "My Birds", "--quiet")
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "My Birds" / "manifest.yaml").is_file()
    assert "clip lengths:" in words(result.output)


def test_a_flat_folder_is_labelled_by_a_file_name_pattern(tmp_path):
    src = tmp_path / "flat"
    for label, freq in (("dog", 300), ("cat", 900)):
        for i in range(5):
            write_tone(src / f"{label}_{i:03d}.wav", freq=freq, seed=i)
    write_tone(src / "noise.wav")  # no underscore: not matched
    write_tone(src / ".._1.wav")  # a label that names a folder: refused
    report = prepare_folder(src, tmp_path / "out", label_pattern=r"(?P<label>[^_]+)_.*")
    labels = read_labels_csv(tmp_path / "out" / "class_labels_indices.csv")
    assert list(labels.names) == ["cat", "dog"]
    assert sum(report.counts.values()) == 10
    train = read_datafile(tmp_path / "out" / "datafiles" / "train.json")
    assert {e.wav.name.split("_")[0]: e.labels for e in train} == {
        "cat": ("/fastast/cat",), "dog": ("/fastast/dog",)}
    assert any("2 audio files do not match --label-pattern" in w for w in report.warnings)
    # no group → one line; a bad expression → one line; nothing labelled → one line
    for pattern, message in (("[^_]+_", "has no group"), ("(unclosed", "not a regular"),
                             ("(?P<label>zzz)", "labels none of the 12 audio files")):
        result = run_cli("prepare", "folder", "--src", str(src), "--out",
                         str(tmp_path / "bad"), "--label-pattern", pattern)
        assert result.exit_code == 2, result.output
        assert message in words(result.output) and "Traceback" not in result.output


def test_a_backtracking_label_pattern_stops_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_module, "PATTERN_TIMEOUT_S", 1.0)
    write_tone(tmp_path / "flat" / ("a" * 40 + "!.wav"))
    with pytest.raises(FastASTError, match="took over 1 s"):
        prepare_folder(tmp_path / "flat", tmp_path / "out", label_pattern=r"((a+)+)$")
