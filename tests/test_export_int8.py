"""int8 on CPU: `export --quantize int8` (onnxruntime's dynamic quantization of the linear
layers) and `--backend onnxruntime-int8` on evaluate, predict, sweep and auto."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation.evaluate import evaluate_checkpoint
from fastast_cli.export.onnx_export import read_metadata, weights_digest
from fastast_cli.export.quantize import (
    MIN_AGREEMENT,
    QuantParity,
    audio_features,
    int8_parity,
    quantized_op_counts,
)
from fastast_cli.inference.backend_choice import (
    AUTO_CANDIDATES,
    ChoiceCache,
    auto_forward,
    choice_key,
    choose_backend,
    pick_fastest,
)
from fastast_cli.inference.backends import cache_key, make_forward, user_cache_dir
from fastast_cli.models.checkpoints import load_model
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.loop import train

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
pytestmark = pytest.mark.usefixtures("one_thread")
# Top-1 agreement the briefly trained tiny model's int8 graph must reach on the demo's clips.
# Its 10 classes are not all well apart after a few epochs: where two are near a tie a
# probability change of ~0.005 flips the top-1, and 97-100 % was seen across quantization
# settings (1 flip in 32 clips is 96.9 %). The 99 % goal for a trained model is measured by
# benchmarks/bench_backends.py.
AGREEMENT = 0.9


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def flat(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def trained(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny AST trained briefly on the demo set (classes well apart): its best checkpoint."""
    out = tmp_path_factory.mktemp("int8") / "run"
    train(TrainConfig(model="ast", size="tiny", depth=2, fstride=16, tstride=16,
                      data=str(demo_data), out=str(out), epochs=4, batch_size=8, lr=5e-4,
                      loss="ce", num_workers=0, device="cpu", lr_start=99))
    return out / "best.pt"


@pytest.fixture(scope="module")
def int8_file(trained: Path, demo_data: Path) -> tuple[Path, str]:
    """`fastast export --quantize int8` of the trained model at r = 4, its parity measured on
    the demo set's evaluation clips: the file and what the command printed."""
    out = trained.parent / "int8.onnx"
    result = invoke("export", str(trained), "--out", str(out), "--r", "4", "--quantize", "int8",
                    "--data", str(demo_data))
    assert result.exit_code == 0, result.output
    return out, flat(result.output)


def test_int8_export_quantizes_every_linear_layer_and_reports_parity(trained, int8_file):
    path, output = int8_file
    ops = quantized_op_counts(path)
    model = load_model(trained, 4)
    linears = sum(isinstance(module, torch.nn.Linear) for module in model.modules())
    # every linear layer's MatMul runs on int8 (the head's Gemm too); activations quantized on
    # the fly; the products of two activations (Q·Kᵀ, softmax·V and the merge step's
    # similarities) have no constant weight and stay fp32
    assert ops["MatMulInteger"] == linears and ops["DynamicQuantizeLinear"] == linears
    assert ops["MatMul"] == 3 * len(model.blocks) and "Gemm" not in ops
    graph = onnx.load(str(path)).graph
    weights = {tensor.name for tensor in graph.initializer}
    assert not [node.name for node in graph.node
                if node.op_type in ("MatMul", "Gemm") and weights & set(node.input)]
    metadata = read_metadata(path)
    assert metadata["quantization"] == "int8" and metadata["r_schedule"] == [4, 4]
    assert metadata["quantization_settings"]["ops"] == ["MatMul", "Gemm"]
    assert metadata["weights_sha256"] == weights_digest(model)
    parity = QuantParity.from_metadata(metadata)
    assert parity is not None and parity.source == "evaluation clips"
    assert parity.clips == 32  # the demo's evaluation fold has 80 clips: 32 taken
    assert f"top-1 agreement {100 * parity.top1_agreement:.1f} %" in output
    assert f"max probability difference {parity.max_prob_diff:.4f} on 32 clips of" in output
    assert parity.top1_agreement >= AGREEMENT
    assert 0 < parity.max_prob_diff < 0.05  # int8 changes the scores, a little
    assert path.stat().st_size < 0.5 * _fp32_size(trained, path.parent)


def _fp32_size(checkpoint: Path, folder: Path) -> int:
    out = folder / "fp32.onnx"
    if not out.exists():
        assert invoke("export", str(checkpoint), "--out", str(out), "--r", "4").exit_code == 0
    return out.stat().st_size


class FlatHead(torch.nn.Module):
    """A stand-in classifier: [B, 8, 4] → logits [B, 2], scored with softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8 * 4, 2)
        self.meta = {"loss": "ce"}

    def input_spec(self):
        return SimpleNamespace(native_length=False)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.linear(fbank.flatten(1))


def test_int8_parity_is_measured_against_the_model():
    """Top-1 agreement and the largest probability difference, as a user of the scores sees
    them: a graph that swaps one clip's two classes agrees on 9 of 10 (compared in chunks)."""
    torch.manual_seed(0)
    model, features = FlatHead(), torch.randn(10, 8, 4)
    with torch.inference_mode():
        logits = model(features).numpy()
    swapped = logits.copy()
    swapped[9] = swapped[9, ::-1]  # in the second chunk of 8
    graph = iter([swapped[:8], swapped[8:]])
    parity = int8_parity(model, lambda batch: next(graph), features, "test clips")
    probabilities = torch.from_numpy(logits[9]).softmax(-1)
    assert parity.top1_agreement == 0.9 and parity.clips == 10
    assert parity.max_prob_diff == pytest.approx(float((probabilities[0] - probabilities[1])
                                                       .abs()), rel=1e-5)


def test_synthetic_parity_clips_are_audio_features_not_noise(trained):
    model = load_model(trained)
    clips = audio_features(model, 6)
    assert clips.shape == (6, model.input_spec().target_length, 128)
    assert len({round(float(clip.std()), 3) for clip in clips}) == 6  # six different sounds
    # normalized log-mel energies: smooth along frequency, unlike N(0, 1) noise
    roughness = (clips[..., 1:] - clips[..., :-1]).abs().mean()
    noise = torch.randn_like(clips)
    assert roughness < 0.5 * (noise[..., 1:] - noise[..., :-1]).abs().mean()


# --- the onnxruntime-int8 backend ------------------------------------------------------------


def test_evaluate_on_int8_keeps_the_accuracy_and_caches_an_int8_export(trained, demo_data):
    # the session's cache (conftest): the sweep test below finds these two exports there
    folder = user_cache_dir() / "onnx"
    model = load_model(trained, 4)
    int8_file = folder / f"{cache_key(model, 'tome', 'int8')}.onnx"
    fp32_file = folder / f"{cache_key(model, 'tome')}.onnx"
    for path in (int8_file, fp32_file):  # evaluate must write them, whatever ran before
        path.unlink(missing_ok=True)
    manifest = load_manifest(demo_data)
    eager = evaluate_checkpoint(trained, manifest, r=4)
    int8 = evaluate_checkpoint(trained, manifest, r=4, backend="onnxruntime-int8")
    agreement = float((int8.logits.argmax(-1) == eager.logits.argmax(-1)).float().mean())
    assert agreement >= AGREEMENT
    assert int8.metrics.accuracy == pytest.approx(eager.metrics.accuracy, abs=0.05)
    assert not torch.equal(int8.logits, eager.logits)  # int8 ran, not a copy of torch
    assert read_metadata(int8_file)["quantization"] == "int8" and not fp32_file.exists()
    evaluate_checkpoint(trained, manifest, r=4, backend="onnxruntime")  # fp32: its own file
    assert read_metadata(fp32_file)["quantization"] == "none"


def test_cache_keys_follow_the_quantization_and_the_weights(trained):
    model = load_model(trained, 4)
    fp32, int8 = cache_key(model, "tome"), cache_key(model, "tome", "int8")
    assert fp32 == cache_key(model, "tome", "none") != int8
    other = load_model(trained, 4)
    with torch.no_grad():
        other.mlp_head[-1].bias.add_(1e-3)
    assert cache_key(other, "tome", "int8") != int8


def test_predict_and_sweep_run_int8(trained, int8_file, demo_data, tmp_path):
    path, _ = int8_file
    clip = sorted((demo_data.parent / "source").rglob("*.wav"))[0]
    tops = {}
    for backend, extra in (("torch", []), ("onnxruntime-int8", ["--onnx", str(path)]),
                           ("auto", ["--onnx", str(path)])):
        result = invoke("predict", str(clip), "--checkpoint", str(trained), "--r", "4",
                        "--backend", backend, *extra, "--json", "--device", "cpu")
        assert result.exit_code == 0, result.output
        tops[backend] = json.loads(result.stdout)["results"][0]["top"]
        if backend == "auto":  # the file's quantization decides what runs it
            assert "backend: onnxruntime-int8" in flat(result.stderr + result.output)
    assert tops["torch"][0]["label"] == tops["onnxruntime-int8"][0]["label"]
    assert tops["torch"][0]["score"] == pytest.approx(tops["onnxruntime-int8"][0]["score"],
                                                      abs=0.05)
    assert tops["auto"] == tops["onnxruntime-int8"]
    out = tmp_path / "sweep.csv"
    result = invoke("sweep", "--data", str(demo_data), "--checkpoint", f"m={trained}",
                    "--r", "4", "--backend", "torch,onnxruntime,onnxruntime-int8", "--runs",
                    "1", "--warmup", "0", "--batch-size", "4", "--device", "cpu",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    with out.open(newline="") as stream:
        rows = {(row["run"], int(row["r"])): row for row in csv.DictReader(stream)}
    names = ("m (torch)", "m (onnxruntime)", "m (onnxruntime-int8)")
    assert set(rows) == {(name, 4) for name in names}  # one r: each backend exports once
    accuracy = {name: float(rows[name, 4]["accuracy"]) for name in names}
    assert accuracy["m (onnxruntime)"] == pytest.approx(accuracy["m (torch)"], abs=1e-6)
    assert accuracy["m (onnxruntime-int8)"] == pytest.approx(accuracy["m (torch)"], abs=0.05)
    assert float(rows["m (onnxruntime-int8)", 4]["samples_per_s"]) > 0
    assert rows["m (onnxruntime-int8)", 4]["dtype"] == "fp32"  # fed fp32, not autocast


def test_int8_files_are_refused_where_they_do_not_belong(trained, int8_file, demo_data):
    path, _ = int8_file
    base = ("evaluate", "--checkpoint", str(trained), "--data", str(demo_data), "--device", "cpu")
    line = one_error_line(invoke(*base, "--r", "4", "--backend", "onnxruntime", "--onnx",
                                 str(path)))
    assert "quantization 'int8'" in line and "--backend onnxruntime-int8" in line
    line = one_error_line(invoke(*base, "--r", "2", "--backend", "onnxruntime-int8", "--onnx",
                                 str(path)))
    assert "exported for other settings" in line and "r_schedule" in line
    other = trained.parent / "other.pt"
    model = load_model(trained, 4)
    with torch.no_grad():
        model.mlp_head[-1].bias.add_(1e-3)
    from fastast_cli.models.checkpoints import save_checkpoint

    save_checkpoint(other, model, mean=model.meta["mean"], std=model.meta["std"])
    line = one_error_line(invoke("evaluate", "--checkpoint", str(other), "--data",
                                 str(demo_data), "--r", "4", "--backend", "onnxruntime-int8",
                                 "--onnx", str(path), "--device", "cpu"))
    assert "other weights" in line
    line = one_error_line(invoke(*base, "--backend", "onnxruntime-int8", "--dtype", "bf16"))
    assert "fp32 export" in line and "int8" in line


# --- user errors -----------------------------------------------------------------------------


def test_quantize_user_errors_are_one_line(trained, tmp_path, monkeypatch):
    line = one_error_line(invoke("export", str(trained), "--format", "hf", "--quantize", "int8",
                                 "--out", str(tmp_path / "hf")))
    assert "--quantize applies to --format onnx" in line
    from onnxruntime import quantization

    def broken(*args, **kwargs):
        raise ValueError("unsupported op\nsecond line")

    monkeypatch.setattr(quantization, "quantize_dynamic", broken)
    line = one_error_line(invoke("export", str(trained), "--quantize", "int8", "--out",
                                 str(tmp_path / "q.onnx")))
    assert line.endswith("int8 quantization failed: unsupported op")
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    monkeypatch.undo()
    real_import = importlib.import_module

    def without_quantization(name: str, *args):
        if name.startswith("onnxruntime.quantization"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_quantization)
    line = one_error_line(invoke("export", str(trained), "--quantize", "int8", "--out",
                                 str(tmp_path / "q.onnx")))
    assert "int8 quantization needs the optional package" in line
    assert "fastast[export]" in line and list(tmp_path.iterdir()) == []


def test_help_lists_the_int8_choices():
    export = flat(invoke("export", "--help").output)
    assert "--quantize" in export and "int8" in export
    for command in ("evaluate", "predict", "sweep"):
        assert "onnxruntime-int8" in flat(invoke(command, "--help").output)


# --- --backend auto --------------------------------------------------------------------------


def test_auto_considers_int8_and_picks_it_when_fastest(tmp_path):
    assert "onnxruntime-int8" in AUTO_CANDIDATES
    timings = {"torch": [1.0, 1.0, 1.0], "onnxruntime": [0.8, 0.8, 0.8],
               "onnxruntime-int8": [0.5, 0.5, 0.5]}
    assert pick_fastest(timings) == ("onnxruntime-int8", "2.00x torch")
    timings["onnxruntime-int8"] = [0.9, 0.9, 0.9]
    assert pick_fastest(timings)[0] == "onnxruntime"


def test_auto_leaves_out_an_int8_graph_that_ranks_classes_differently(tmp_path, monkeypatch):
    """A recorded top-1 agreement below 99 % keeps int8 out of the race, however fast."""
    monkeypatch.setenv("FASTAST_AUTO_BACKENDS", "onnxruntime-int8")
    torch.manual_seed(0)
    model = build_model("tiny", 4, target_length=128, depth=1).eval()

    def make(name: str):
        def forward(batch: torch.Tensor) -> torch.Tensor:
            return batch.sum(-1)

        if name == "onnxruntime-int8":
            forward.parity = QuantParity(0.9, 0.2, 32, "synthetic clips")
        return forward

    forward = auto_forward(model, make, batch_size=2, cache=ChoiceCache(tmp_path / "c.json"))
    assert forward.choice.backend == "torch"
    assert ("onnxruntime-int8 left out: its top-1 agreement with the model is 90.0 % "
            f"(< {100 * MIN_AGREEMENT:g} %)") in forward.choice.reason


def test_the_choice_key_names_the_candidates_int8_among_them(trained, tmp_path):
    model = load_model(trained, 4)
    shape, device = (8, 1024, 128), torch.device("cpu")
    fp32 = choice_key(model, shape, device, torch.float32, "tome", ["onnxruntime"])
    both = choice_key(model, shape, device, torch.float32, "tome",
                      ["onnxruntime-int8", "onnxruntime"])
    assert both.candidates == ("onnxruntime", "onnxruntime-int8")
    assert fp32.digest() != both.digest()
    seconds = {"torch": 1.0, "onnxruntime": 0.9, "onnxruntime-int8": 0.5}
    cache = ChoiceCache(tmp_path / "choices.json")
    chosen = choose_backend(both, torch.zeros(1), lambda name: lambda batch: seconds[name],
                            lambda forward, batch: forward(batch),
                            candidates=["onnxruntime", "onnxruntime-int8"], cache=cache)
    assert chosen.backend == "onnxruntime-int8" and chosen.reason == "2.00x torch"
    assert cache.get(both).backend == "onnxruntime-int8" and cache.get(fp32) is None


def test_auto_runs_int8_end_to_end_on_a_tiny_model(trained, tmp_path, monkeypatch):
    """With int8 among the candidates, auto exports and times it beside fp32 and torch (the
    pick is this machine's) and runs what it picked."""
    monkeypatch.setenv("FASTAST_CACHE", str(tmp_path))
    monkeypatch.setenv("FASTAST_AUTO_BACKENDS", "onnxruntime,onnxruntime-int8")
    model = load_model(trained, 4)
    forward = make_forward(model, "auto", batch_size=2)
    assert set(forward.choice.samples_per_s) == {"torch", "onnxruntime", "onnxruntime-int8"}
    stored = json.loads((tmp_path / "backend-choice.json").read_text())
    assert [entry["key"]["candidates"] for entry in stored.values()] == [
        ["onnxruntime", "onnxruntime-int8"]]
    batch = audio_features(model, 3)
    with torch.inference_mode():
        expected = model(batch)
    got = forward(batch)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert np.isfinite(got.numpy()).all()
