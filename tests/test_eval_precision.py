"""Evaluation runs in fp32 by default (as AST evaluates; AMP is for training), `--dtype` picks
fp16/bf16 autocast on evaluate, predict and sweep, and a sweep records what every row ran
with (device, dtype, batch, threads); sweep tables from before those columns still resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation import evaluate as evaluate_module
from fastast_cli.evaluation.evaluate import evaluate_checkpoint, evaluate_model
from fastast_cli.evaluation.predict import predict_dataset
from fastast_cli.models.checkpoints import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(nn.Module):
    """A linear model that records whether autocast was on and the dtype its layer gave."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        self.seen.append((torch.is_autocast_enabled(x.device.type), out.dtype))
        return out


def test_predict_dataset_runs_fp32_unless_asked():
    items = TensorDataset(torch.randn(4, 4), torch.zeros(4, 3))
    model = Recorder()
    logits, _ = predict_dataset(model, items, 2, torch.device("cpu"))
    assert model.seen == [(False, torch.float32)] * 2 and logits.dtype == torch.float32
    model.seen.clear()
    logits, _ = predict_dataset(model, items, 2, torch.device("cpu"), torch.bfloat16)
    assert model.seen == [(True, torch.bfloat16)] * 2 and logits.dtype == torch.float32


@pytest.fixture(scope="module")
def tiny_checkpoint(small_demo, tmp_path_factory):
    manifest = load_manifest(small_demo)
    torch.manual_seed(0)
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, mean=mean,
                           std=std, metric="accuracy")


def test_evaluation_on_cuda_is_fp32_by_default(small_demo, tiny_checkpoint, monkeypatch):
    """The device AST evaluates on does not change the precision: no fp16 autocast on CUDA
    unless --dtype asks (checked by what the scoring is asked to run in)."""
    asked = []

    def fake_predict(model, dataset, batch_size, device, dtype=None, **options):
        asked.append((device.type, dtype, options.get("amp")))
        return torch.zeros(len(dataset), 10), torch.zeros(len(dataset), 10)

    monkeypatch.setattr(evaluate_module, "predict_dataset", fake_predict)
    manifest = load_manifest(small_demo)
    model = evaluate_module.load_classifier(tiny_checkpoint)
    evaluate_model(model, manifest, "m", device=torch.device("cuda"))
    evaluate_model(model, manifest, "m", device=torch.device("cuda"), dtype="fp16")
    assert asked == [("cuda", torch.float32, None), ("cuda", torch.float16, None)]


def test_evaluate_dtype_flag(small_demo, tiny_checkpoint, tmp_path):
    fp32 = evaluate_checkpoint(tiny_checkpoint, load_manifest(small_demo))
    assert fp32.dtype == "fp32"
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tiny_checkpoint),
                                      "--data", str(small_demo), "--device", "cpu", "--dtype",
                                      "bf16", "--out", str(tmp_path / "e"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "bf16" in result.output
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["dtype"] == "bf16"
    assert saved["accuracy"] == pytest.approx(fp32.metrics.accuracy, abs=0.15)
    bad = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tiny_checkpoint),
                                   "--data", str(small_demo), "--dtype", "fp8"])
    assert bad.exit_code == 2 and "--dtype 'fp8'" in bad.output
    onnx = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tiny_checkpoint),
                                    "--data", str(small_demo), "--dtype", "fp16",
                                    "--backend", "onnxruntime"])
    assert onnx.exit_code == 2 and "fp32 export" in onnx.output


def test_predict_dtype_flag(tiny_checkpoint, tmp_path):
    wav = tmp_path / "tone.wav"
    sf.write(wav, 0.1 * np.sin(np.arange(32000) * 0.05).astype(np.float32), 16000)
    runs = {}
    for dtype in ("fp32", "bf16"):
        result = CliRunner().invoke(app, ["predict", "--checkpoint", str(tiny_checkpoint),
                                          "--device", "cpu", "--dtype", dtype, "--json",
                                          str(wav)])
        assert result.exit_code == 0, result.output
        runs[dtype] = result.output
    assert "bf16 autocast" in runs["bf16"] and "autocast" not in runs["fp32"]
    bad = CliRunner().invoke(app, ["predict", "--checkpoint", str(tiny_checkpoint),
                                   "--dtype", "half", str(wav)])
    assert bad.exit_code == 2 and "--dtype 'half'" in bad.output


def sweep(args):
    return CliRunner().invoke(app, ["sweep", "--device", "cpu", "--warmup", "0", "--runs", "1",
                                    "--batch-size", "2", *args])


def test_sweep_records_device_dtype_batch_and_threads(small_demo, tiny_checkpoint, tmp_path,
                                                      monkeypatch):
    from fastast_cli.evaluation import sweep as sweep_module

    asked = []
    real = sweep_module.evaluate_model
    monkeypatch.setattr(sweep_module, "evaluate_model",
                        lambda *a, **k: asked.append(k["dtype"]) or real(*a, **k))
    out = tmp_path / "sweep.csv"
    args = ["--data", str(small_demo), "--checkpoint", f"a={tiny_checkpoint}", "--out", str(out)]
    result = sweep([*args, "--r", "0,8"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert asked == ["fp32", "fp32"]  # scored in fp32 by default
    for row in rows:
        assert row["device"].startswith("cpu") and row["dtype"] == "fp32"
        assert row["batch"] == "2" and row["threads"] == str(torch.get_num_threads())
    assert "timed on cpu" in " ".join(result.output.split())
    # A table from before the timing columns resumes: its rows kept, the new one added.
    old_columns = [c for c in rows[0] if c not in ("device", "dtype", "threads")]
    with out.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    asked.clear()
    result = sweep([*args, "--r", "0,8,16"])
    assert result.exit_code == 0, result.output
    assert asked == ["fp32"]  # only r = 16 is measured
    resumed = list(csv.DictReader(out.open()))
    assert [row["r"] for row in resumed] == ["0", "8", "16"]
    # kept rows keep their metric and are timed again in this run's loop (with its settings)
    assert resumed[0]["dtype"] == resumed[2]["dtype"] == "fp32"
    assert resumed[0]["accuracy"] == rows[0]["accuracy"]


def test_throughput_sweep_saves_what_it_ran_with(tmp_path):
    out = tmp_path / "speed.csv"
    result = sweep(["--model", "tiny", "--preset", "speechcommands", "--r", "0,4",
                    "--dtype", "bf16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert {(row["dtype"], row["batch"], row["threads"]) for row in rows} == {
        ("bf16", "2", str(torch.get_num_threads()))}
    assert rows[0]["device"].startswith("cpu")
    assert "bf16" in " ".join(result.output.split())
