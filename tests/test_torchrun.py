"""`evaluate` and `predict` under torchrun (2 CPU processes, gloo): each rank scores its shard,
the first one prints and writes, and the results equal those of one process; and training a
model whose forward leaves parameters unused (DDP must be told)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.distributed import Ranks, unused_parameters

OLD = Path(__file__).parent / "fixtures" / "old_format"


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """`fastast ARGS` in 2 processes under torchrun."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "fastast_cli",
               *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_shards_are_contiguous_cover_every_item_once_and_differ_by_one_at_most():
    for size in (0, 1, 5, 16):
        for world in (1, 2, 3):
            shards = [Ranks(rank, world).shard(size) for rank in range(world)]
            assert [i for shard in shards for i in shard] == list(range(size))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("kind", ["ast", "elastic"])
def test_evaluate_under_torchrun_gives_the_scores_of_one_process(kind, small_demo, tmp_path):
    checkpoint = str(OLD / kind / "best.pt")
    common = ["evaluate", "--checkpoint", checkpoint, "--data", str(small_demo),
              "--device", "cpu"]
    one = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    done = torchrun(*common, "--out", str(tmp_path / "two"))
    # one table: rank 1 prints nothing (class_accuracy.csv is a file the first one wrote)
    assert done.stdout.replace("class_accuracy", "").count("accuracy") == 1
    assert done.stdout.count("wrote metrics.json") == 1
    for name in ("predictions.csv", "per_class.csv"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics == json.loads((tmp_path / "one" / "metrics.json").read_text())
    expected = torch.load(OLD / "expected.pt", weights_only=True)["metrics"][kind]
    for key in ("accuracy", "mAP", "mAUC", "d_prime"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6)


def test_predict_under_torchrun_gives_the_results_of_one_process_in_order(small_demo,
                                                                        tmp_path):
    audio = sorted((small_demo.parent / "source").rglob("*.wav"))[:5]
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    files = [str(audio[0]), str(broken), *map(str, audio[1:])]
    common = ["predict", *files, "--checkpoint", str(OLD / "ast" / "best.pt"), "--json",
              "--device", "cpu"]
    one = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "one.json")])
    assert one.exit_code == 0, one.output
    done = torchrun(*common, "--out", str(tmp_path / "two.json"))
    printed = json.loads(done.stdout)  # one JSON document: rank 1 prints nothing
    written = json.loads((tmp_path / "two.json").read_text())
    assert printed == written == json.loads((tmp_path / "one.json").read_text())
    assert [result["file"] for result in written["results"]] == files[:1] + files[2:]
    assert [failure["file"] for failure in written["failures"]] == [str(broken)]
    assert done.stderr.count("failed:") == 1


def test_unused_parameters_names_what_the_forward_skips_and_leaves_the_model_alone():
    """MobileNetV3's `forward_features` skips `conv_head`; an AST uses everything. The probe
    runs on a copy in training mode: BatchNorm statistics and the random state stay as they
    were."""
    from fastast_cli import build_model
    from fastast_cli.models.teachers import CNNClassifier, CNNConfig

    cnn = CNNClassifier(CNNConfig(num_classes=3, backbone="mobilenetv3-small"))
    cnn.meta = {"target_length": 64}
    statistics = {name: buffer.clone() for name, buffer in cnn.named_buffers()}
    state = torch.get_rng_state()
    assert unused_parameters(cnn, cnn.input_spec().example(torch.device("cpu"))) == [
        "backbone.conv_head.weight", "backbone.conv_head.bias"]
    assert all(torch.equal(buffer, statistics[name]) for name, buffer in cnn.named_buffers())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(parameter.grad is None for parameter in cnn.parameters())
    ast = build_model("tiny", 3, target_length=64, fstride=16, tstride=16, depth=2, r=4)
    assert unused_parameters(ast, ast.input_spec().example(torch.device("cpu"))) == []


def test_ddp_trains_a_model_whose_forward_leaves_parameters_unused(small_demo, tmp_path):
    """The demo's MobileNetV3 teacher under torchrun: DDP without find_unused_parameters
    failed at the second step ("Expected to have finished reduction in the prior
    iteration")."""
    torchrun("train-teacher", "--recipe", "demo-teacher", "--data", str(small_demo),
             "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["last"]["epoch"] == 2
