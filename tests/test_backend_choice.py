"""`--backend auto`: the choice from (fake) timings, its cache and key, and the real thing on a
tiny model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.inference.backend_choice import (
    BackendChoice,
    ChoiceCache,
    ChoiceKey,
    available_candidates,
    choice_key,
    choose_backend,
    pick_fastest,
)
from fastast_cli.inference.backends import make_forward, user_cache_dir
from fastast_cli.models.checkpoints import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

KEY = ChoiceKey("AMD EPYC 9R14", "AVX512", 2, {"torch": "2.11.0", "onnxruntime": "1.22.0"},
                "abc123", (8, 128, 128), "cpu", "float32")
BATCH = torch.zeros(8, 4, 4)


def tiny_ast(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("tiny", 4, target_length=128, depth=2,
                       labels=["a", "b", "c", "d"]).eval()


class FakeMachine:
    """Backends that take a fixed number of seconds per batch (a list: one per call, cycled),
    counting how often they are made and timed."""

    def __init__(self, seconds: dict[str, list[float]], broken: tuple[str, ...] = ()) -> None:
        self.seconds, self.broken = seconds, broken
        self.loads: list[str] = []
        self.calls = 0

    def load(self, name: str):
        self.loads.append(name)
        if name in self.broken:
            raise RuntimeError(f"{name} cannot load")
        calls = iter(self.seconds[name] * 10)

        def forward(batch: torch.Tensor) -> float:
            return next(calls)

        return forward

    def timer(self, forward, batch: torch.Tensor) -> float:
        self.calls += 1
        return forward(batch)

    def choose(self, cache: ChoiceCache, candidates=("onnxruntime",)) -> BackendChoice:
        return choose_backend(KEY, BATCH, self.load, self.timer, candidates=candidates,
                              cache=cache)


@pytest.fixture
def cache(tmp_path: Path) -> ChoiceCache:
    return ChoiceCache(tmp_path / "choice.json")


def test_a_clearly_faster_candidate_is_picked():
    backend, reason = pick_fastest({"torch": [2.0, 2.02, 1.98], "onnxruntime": [1.0, 1.01, 0.99]})
    assert backend == "onnxruntime" and reason == "2.00x torch"


@pytest.mark.parametrize("timings", [
    {"torch": [1.0, 1.0, 1.0], "onnxruntime": [0.97, 0.97, 0.97]},  # 3 % < the 5 % floor
    {"torch": [0.8, 1.0, 1.2], "onnxruntime": [0.9, 0.9, 0.9]},  # 11 % < torch's 40 % spread
    {"torch": [1.0, 1.0, 1.0], "onnxruntime": [0.6, 0.9, 1.2]},  # 11 % < its own 67 % spread
    {"torch": [1.0, 1.0, 1.0], "onnxruntime": [1.5, 1.5, 1.5]},  # slower
])
def test_a_candidate_within_noise_of_torch_or_slower_leaves_torch(timings):
    assert pick_fastest(timings)[0] == "torch"


def test_the_fastest_of_several_winners_is_picked():
    timings = {"torch": [3.0] * 3, "compile": [2.0] * 3, "onnxruntime": [1.5] * 3}
    assert pick_fastest(timings)[0] == "onnxruntime"


def test_measured_choice_is_cached_and_a_hit_measures_nothing(cache):
    machine = FakeMachine({"torch": [2.0], "onnxruntime": [1.0]})
    choice = machine.choose(cache)
    assert choice.backend == "onnxruntime" and not choice.cached
    assert choice.samples_per_s == pytest.approx({"torch": 4.0, "onnxruntime": 8.0})
    assert machine.calls == 8  # 1 warm-up + 3 rounds, two backends
    again = FakeMachine({"torch": [2.0], "onnxruntime": [1.0]})
    hit = again.choose(cache)
    assert (hit.backend, hit.cached, again.calls, again.loads) == ("onnxruntime", True, 0, [])
    assert hit.samples_per_s == choice.samples_per_s
    assert "cached" in hit.describe()
    other = FakeMachine({"torch": [1.0], "onnxruntime": [2.0]})
    other_key = dataclasses.replace(KEY, shape=(16, 128, 128))
    assert choose_backend(other_key, BATCH, other.load, other.timer, candidates=["onnxruntime"],
                          cache=cache).backend == "torch"
    assert other.calls == 8
    assert len(json.loads(cache.path.read_text())) == 2  # both kept
    assert [p.name for p in cache.path.parent.iterdir()] == [cache.path.name]  # no temporaries


def test_a_candidate_failing_to_load_or_run_leaves_torch(cache):
    machine = FakeMachine({"torch": [2.0], "onnxruntime": [1.0]}, broken=("onnxruntime",))
    choice = machine.choose(cache)
    assert choice.backend == "torch" and "onnxruntime failed" in choice.reason
    assert set(choice.samples_per_s) == {"torch"}

    machine = FakeMachine({"torch": [2.0], "onnxruntime": [1.0]})
    loaded = machine.load

    def load(name):
        forward = loaded(name)
        if name == "torch":
            return forward

        def failing(batch):
            raise RuntimeError("onnxruntime: shape mismatch")
        return failing

    choice = choose_backend(dataclasses.replace(KEY, model="other"), BATCH, load, machine.timer,
                            candidates=["onnxruntime"], cache=cache)
    assert choice.backend == "torch" and "onnxruntime failed" in choice.reason


def test_with_torch_alone_nothing_is_measured_or_cached(cache, monkeypatch):
    machine = FakeMachine({"torch": [1.0]})
    choice = machine.choose(cache, candidates=[])
    assert (choice.backend, machine.calls, machine.loads) == ("torch", 0, [])
    assert not cache.path.exists()
    monkeypatch.setenv("FASTAST_AUTO_BACKENDS", "")
    assert available_candidates() == []
    monkeypatch.setenv("FASTAST_AUTO_BACKENDS", "torch,compile")
    assert available_candidates() == ["compile"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"%s": {"backend": 3}}',
                                     '{"%s": "torch"}', "\udcff"])
def test_a_corrupt_cache_is_ignored_and_replaced(cache, content):
    cache.path.write_text(content.replace("%s", KEY.digest()), encoding="utf-8",
                          errors="surrogateescape")
    machine = FakeMachine({"torch": [2.0], "onnxruntime": [1.0]})
    assert machine.choose(cache).backend == "onnxruntime" and machine.calls == 8
    assert json.loads(cache.path.read_text())[KEY.digest()]["backend"] == "onnxruntime"


def test_the_key_changes_with_each_field():
    others = {"processor": "Intel Xeon", "vector_width": "AVX2", "threads": 4,
              "versions": {**KEY.versions, "onnxruntime": "1.23.0"}, "model": "def456",
              "shape": (8, 1024, 128), "device": "cuda", "dtype": "float16",
              "candidates": ("onnxruntime", "onnxruntime-int8"), "host_memory": "kept"}
    assert set(others) == {f.name for f in dataclasses.fields(ChoiceKey)}
    digests = {dataclasses.replace(KEY, **{name: value}).digest()
               for name, value in others.items()}
    assert len(digests) == len(others) and KEY.digest() not in digests


def test_the_key_of_a_model_follows_weights_merging_shape_and_dtype():
    model, cpu = tiny_ast(), torch.device("cpu")
    key = choice_key(model, (8, 128, 128), cpu, torch.float32, "tome")
    assert key == choice_key(model, (8, 128, 128), cpu, torch.float32, "tome")
    assert key.threads == torch.get_num_threads()
    assert key.vector_width == torch.backends.cpu.get_cpu_capability()
    assert key.processor and key.versions["torch"] == torch.__version__
    different = [
        choice_key(tiny_ast(seed=1), (8, 128, 128), cpu, torch.float32, "tome"),
        choice_key(model, (4, 128, 128), cpu, torch.float32, "tome"),
        choice_key(model, (8, 128, 128), cpu, torch.bfloat16, "tome"),
        choice_key(model.set_r(4), (8, 128, 128), cpu, torch.float32, "tome"),
    ]
    assert len({k.digest() for k in [key, *different]}) == 5


def test_the_cache_folder_env_var_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTAST_CACHE_DIR", str(tmp_path / "old"))
    monkeypatch.setenv("FASTAST_CACHE", str(tmp_path / "new"))
    assert user_cache_dir() == tmp_path / "new"


def test_auto_measures_a_tiny_model_once_and_runs_what_it_picked(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("FASTAST_CACHE", str(tmp_path))
    monkeypatch.setenv("FASTAST_AUTO_BACKENDS", "onnxruntime")
    model = tiny_ast().set_r(4)
    forward = make_forward(model, "auto", batch_size=2)
    choice = forward.choice
    assert forward.backend == choice.backend in ("torch", "onnxruntime")
    assert set(choice.samples_per_s) == {"torch", "onnxruntime"} and not choice.cached
    batch = torch.randn(3, 128, 128)
    with torch.inference_mode():
        torch.testing.assert_close(forward(batch), model(batch), atol=1e-4, rtol=1e-4)
    stored = json.loads((tmp_path / "backend-choice.json").read_text())
    assert [entry["key"]["shape"] for entry in stored.values()] == [[2, 128, 128]]
    again = make_forward(model, "auto", batch_size=2)
    assert again.choice.cached and again.backend == choice.backend
    assert make_forward(model, "torch").backend == "torch"


def test_evaluate_and_predict_default_to_auto_and_name_the_backend(small_demo, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    labels = [line.split(",")[2].strip('"') for line in
              (small_demo.parent / "class_labels_indices.csv").read_text().splitlines()[1:]]
    save_checkpoint(path, build_model("tiny", len(labels), target_length=1024, depth=1,
                                      labels=labels), mean=-4.0, std=4.0)
    evaluated = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(path), "--data",
                                         str(small_demo), "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "backend: torch (auto: the only backend available)" in " ".join(
        evaluated.output.split())
    clip = sorted((small_demo.parent / "source").rglob("*.wav"))[0]
    predicted = CliRunner().invoke(app, ["predict", str(clip), "--checkpoint", str(path),
                                         "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    assert "backend: torch (auto:" in predicted.output


def test_sweep_rows_name_the_backend_auto_picked(monkeypatch, tmp_path):
    """`sweep --backend auto` times, at each r, the backend picked for that r, and its rows say
    which (here the pick is forced to onnxruntime at r = 4 and torch at r = 0)."""
    pytest.importorskip("onnxruntime")
    from fastast_cli.evaluation.sweep import backend_run_name
    from fastast_cli.evaluation.throughput import sweep_throughput
    from fastast_cli.inference import backend_choice

    monkeypatch.setenv("FASTAST_CACHE", str(tmp_path))
    monkeypatch.setenv("FASTAST_AUTO_BACKENDS", "onnxruntime")
    model = tiny_ast()
    picks = iter([("torch", "forced"), ("onnxruntime", "forced")])
    monkeypatch.setattr(backend_choice, "pick_fastest", lambda timings: next(picks))
    rows = sweep_throughput(model, [0, 4], batch_size=2, warmup=0, runs=1, backends=("auto",))
    assert [(row.r, row.backend) for row in rows] == [(0, "torch"), (4, "onnxruntime")]
    assert rows[1].tokens < rows[0].tokens
    assert backend_run_name("kd", "auto", ("auto",)) == "kd"  # its pick goes in a note
    assert backend_run_name("kd", "onnxruntime", ("torch", "onnxruntime")) == "kd (onnxruntime)"


def test_auto_with_an_onnx_file_runs_it_in_fp32_only(tmp_path):
    pytest.importorskip("onnxruntime")
    from fastast_cli.errors import FastASTError
    from fastast_cli.export.onnx_export import export_onnx

    model = tiny_ast().set_r(4)
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path, method="tome")
    assert make_forward(model, "auto", onnx_file=path).backend == "onnxruntime"
    with pytest.raises(FastASTError, match="runs in fp32"):
        make_forward(model, "auto", onnx_file=path, dtype=torch.float16)


def test_auto_below_fp32_leaves_onnxruntime_out(monkeypatch, tmp_path):
    """onnxruntime runs its fp32 export: at fp16/bf16 it is no candidate, nothing is timed."""
    monkeypatch.setenv("FASTAST_CACHE", str(tmp_path))
    monkeypatch.setenv("FASTAST_AUTO_BACKENDS", "onnxruntime")
    forward = make_forward(tiny_ast(), "auto", batch_size=2, dtype=torch.bfloat16)
    assert forward.backend == "torch" and forward.choice.samples_per_s == {}
    assert not (tmp_path / "backend-choice.json").exists()


def test_the_torch_forward_returns_logits_without_autograd_like_onnxruntime():
    """Whichever backend `auto` picks, its logits are plain tensors: the torch forward runs
    without autograd (an onnxruntime forward's output never has a graph), so the same caller
    code works on every machine, and the logits are the model's."""
    torch.manual_seed(0)
    model = build_model("tiny", 3, depth=1, target_length=32, fstride=16, tstride=16, r=2)
    batch = torch.randn(2, 32, 128)
    logits = make_forward(model, "torch")(batch)
    assert not logits.requires_grad and logits.grad_fn is None
    with torch.inference_mode():
        expected = model(batch)
    assert torch.equal(logits, expected)
    assert logits.numpy().shape == (2, 3)
