"""Training under torchrun with DDP (2 CPU processes, gloo; tests/ddp_worker.py): ranks stay
identical and follow the one-process schedule, validate with rank 0's BatchNorm statistics, and
stop together on a stop request or a non-finite loss that reached one of them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation.evaluate import evaluate_model
from fastast_cli.models.checkpoints import read_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.training import loop as loop_module
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.loop import Trainer


def run_ddp_worker(small_demo: Path, out: Path, *args: str) -> None:
    """tests/ddp_worker.py in 2 CPU processes under torchrun (gloo)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = Path(__file__).with_name("ddp_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(port), str(worker),
               str(small_demo), str(out), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


def test_ddp_ranks_validate_and_keep_rank_0s_batchnorm_statistics(small_demo, tmp_path):
    """Each rank's last training forward updates BatchNorm's running statistics from its own
    batch; at the epoch's end every rank takes rank 0's, so the shards are validated with the
    model last.pt holds, and the logged metrics are that checkpoint's on all clips."""
    run_ddp_worker(small_demo, tmp_path, "cnn")
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert any("running_mean" in name for name in first)
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    last = list(csv.DictReader((tmp_path / "log.csv").open()))[-1]
    manifest = load_manifest(small_demo)
    whole = evaluate_model(load_classifier(tmp_path / "last.pt"), manifest, "last.pt",
                           split=manifest.selection_split)
    for key, value in whole.metrics.summary().items():
        assert float(last[key]) == pytest.approx(value, abs=1e-6), key


def test_a_stop_request_to_one_rank_stops_every_rank_at_the_same_step(small_demo, tmp_path):
    """SIGTERM reaches rank 1 alone, after its second step: rank 0 must not wait in the next
    step's collectives for a rank that left. Both stop after step 2, told of SIGTERM, and rank
    0 saves that state in last.pt before either leaves."""
    run_ddp_worker(small_demo, tmp_path, "stop")
    stopped = [torch.load(tmp_path / f"stopped{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [entry["step"] for entry in stopped] == [2, 2]
    assert all(entry["exit_code"] == 143 for entry in stopped)
    assert all(entry["message"].startswith("SIGTERM in epoch 1, after batch 2: the state is "
                                           "saved") for entry in stopped)
    saved = read_checkpoint(tmp_path / "last.pt")["progress"]
    assert saved["step"] == 2 and saved["batch"] == 2 and saved["epoch"] == 0


def test_a_non_finite_loss_in_one_rank_stops_every_rank_before_the_update(small_demo,
                                                                          tmp_path):
    """Rank 1's second loss is NaN: both ranks stop at that step (rank 0 says the loss went
    non-finite in another process), none waits for the other in the backward pass, and no
    mid-epoch state replaces last.pt."""
    run_ddp_worker(small_demo, tmp_path, "nan")
    stopped = [torch.load(tmp_path / f"stopped{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [entry["step"] for entry in stopped] == [1, 1]
    assert stopped[0]["message"].startswith("the loss became non-finite in another process "
                                            "in epoch 1 at step 1")
    assert stopped[1]["message"].startswith("the loss became nan in epoch 1 at step 1")
    saved = read_checkpoint(tmp_path / "last.pt")["progress"]
    assert saved["step"] == 0 and saved["epoch"] == 0


def test_ddp_with_two_cpu_processes_keeps_ranks_identical(small_demo, tmp_path):
    run_ddp_worker(small_demo, tmp_path)
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    # one process of the same settings, built before it trains: the initial weights
    from ddp_worker import DDP_CONFIG, record_steps

    single = Trainer(TrainConfig(**DDP_CONFIG, data=str(small_demo), out=str(tmp_path / "single")),
                     loop_module.Ranks(), torch.device("cpu"), loop_module.SilentReporter())
    initial = {name: tensor.clone() for name, tensor in single.model.state_dict().items()}
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], initial["blocks.0.attn.qkv.weight"])
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3  # rank 0 alone writes
    # each rank validated its half of the clips; the metrics are those of all clips
    validated = [torch.load(tmp_path / f"validated{rank}.pt") for rank in (0, 1)]
    clips = len(single.eval_set)
    assert validated == [2 * (clips // 2), 2 * (clips - clips // 2)]  # 2 epochs
    last = list(csv.DictReader((tmp_path / "log.csv").open()))[-1]
    whole = evaluate_model(load_classifier(tmp_path / "last.pt"), load_manifest(small_demo),
                           "last.pt", split=load_manifest(small_demo).selection_split)
    for key, value in whole.metrics.summary().items():
        assert float(last[key]) == pytest.approx(value, abs=1e-6), key
    # batch_size is the global batch: 2 processes follow the 1-process schedule step by step
    # (steps per epoch, warm-up, lr) and see its clips, each step's split between them.
    expected = record_steps(single)
    single.run(resume=False)
    ranks = [torch.load(tmp_path / f"steps{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert ranks[0]["warmup"] == ranks[1]["warmup"] == single.warmup_steps > 0  # from scratch
    train_clips = len(single.train_items)
    assert len(expected) == 2 * -(-train_clips // 4)  # 2 epochs of 4-clip steps
    for rank in ranks:
        assert [(epoch, lr) for epoch, lr, _ in rank["steps"]] == [
            (epoch, lr) for epoch, lr, _ in expected]
        assert all(len(clips) == 2 for _, _, clips in rank["steps"])
    for (_, _, clips), zero, one in zip(expected, ranks[0]["steps"], ranks[1]["steps"],
                                        strict=True):
        assert sorted(clips) == sorted(zero[2] + one[2])
