"""`--tensorboard`: event files of a training run, read back with TensorBoard's own reader."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastast_cli.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_writes_tensorboard_scalars(small_demo: Path, tmp_path: Path) -> None:
    accumulator_module = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train-teacher", "--recipe", "demo", "--data", str(small_demo), "--out", str(out),
        "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--num-workers", "0",
        "--tensorboard"])
    assert result.exit_code == 0, result.output
    events = accumulator_module.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_s", "epoch/train_loss", "epoch/lr",
            "epoch/accuracy", "epoch/mAP", "epoch/mAUC"} <= tags
    log = [line.split(",") for line in (out / "log.csv").read_text().splitlines()]
    header, rows = log[0], log[1:]
    accuracy = [event.value for event in events.Scalars("epoch/accuracy")]
    assert [event.step for event in events.Scalars("epoch/accuracy")] == [1, 2]
    assert accuracy == pytest.approx([float(row[header.index("accuracy")]) for row in rows],
                                     abs=1e-6)
    steps = [event.step for event in events.Scalars("train/loss")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) % 2 == 0  # 2 equal epochs


def test_missing_tensorboard_is_one_line_before_training(small_demo: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def without_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    result = CliRunner().invoke(app, [
        "train-teacher", "--recipe", "demo", "--data", str(small_demo), "--out",
        str(tmp_path / "run"), "--epochs", "1", "--tensorboard"])
    assert result.exit_code == 2, result.output
    assert "pip install 'fastast[tensorboard]'" in " ".join(result.output.split())
    assert not (tmp_path / "run" / "last.pt").exists()
