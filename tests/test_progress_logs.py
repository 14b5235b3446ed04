"""Long commands with stderr in a log file: plain progress lines, none with --quiet."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.progress import set_progress

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(small_demo, tmp_path_factory) -> Path:
    """A tiny AST for small_demo: 96 patches, 2 blocks."""
    manifest = load_manifest(small_demo)
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, mean=mean, std=std)


def progress_lines(stderr: str, description: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{description}: step ")]


def test_long_commands_log_progress_lines_and_quiet_silences_them(
        small_demo, checkpoint, tmp_path, monkeypatch) -> None:
    """CliRunner's stderr is not a terminal: every long step prints `step n/N` lines (at
    interval 0, one per step), and its last line says 100%."""
    monkeypatch.setenv("FASTAST_PROGRESS_INTERVAL", "0")
    commands = {
        ("prepare", "generate demo clips", "prepare audio"): [
            "prepare", "demo", "--clips-per-class", "5", "--out", str(tmp_path / "demo")],
        ("train-teacher", "epoch 1/1", "evaluate"): [
            "train-teacher", "--recipe", "demo", "--data", str(small_demo),
            "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", str(tmp_path / "r")],
        ("evaluate", "evaluate"): [
            "evaluate", "--checkpoint", str(checkpoint), "--data", str(small_demo),
            "--device", "cpu"],
        ("sweep", "timing", "sweeping", "evaluate"): [
            "sweep", "--data", str(small_demo), "--checkpoint", f"m={checkpoint}", "--r", "0,2",
            "--runs", "1", "--warmup", "0", "--batch-size", "2", "--device", "cpu"],
    }
    try:
        for (name, *steps), args in commands.items():
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, (name, result.output)
            for description in steps:
                lines = progress_lines(result.stderr, description)
                assert lines, (name, description, result.stderr)
                assert "(100%)" in lines[-1] and "elapsed" in lines[-1], (name, lines)
            if name == "train-teacher":  # training steps also say their loss and speed
                last = progress_lines(result.stderr, "epoch 1/1")[-1]
                assert "loss" in last and "samples/s" in last, last
            again = ["--overwrite"] if name == "train-teacher" else []
            quiet = CliRunner().invoke(app, [*args, "--quiet", *again])
            assert quiet.exit_code == 0, (name, quiet.output)
            assert " step " not in quiet.stderr, (name, quiet.stderr)
    finally:
        set_progress(False)
