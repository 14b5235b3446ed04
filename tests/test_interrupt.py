"""Ctrl-C in the middle of a training step on the CPU stops at the next module, drops the step
and keeps the exact resume."""

from __future__ import annotations

import signal

import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from fastast_cli.interrupt import abandonable, can_abandon
from fastast_cli.models.checkpoints import read_checkpoint
from fastast_cli.training.loop import TrainingInterrupted, train
from fastast_cli.training.reporting import SilentReporter

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_AST = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16}


def config(data, out, **values):
    from fastast_cli.training.config import TrainConfig

    base = {**TINY_AST, "data": str(data), "out": str(out), "epochs": 2, "batch_size": 8,
            "lr": 2e-4, "loss": "ce", "num_workers": 0, "device": "cpu", "lr_start": 99}
    return TrainConfig(**{**base, **values})


def test_ctrl_c_in_the_backward_pass_stops_at_the_next_module_input():
    before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN in a background job
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(4, 4) for _ in range(6)))
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(KeyboardInterrupt), abandonable():
        out = model(x)
        out.register_hook(lambda grad: signal.raise_signal(signal.SIGINT))  # first in backward
        out.sum().backward()
    assert x.grad is None and model[0].weight.grad is None  # the pass stopped at once
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found is back
    with abandonable():  # without a Ctrl-C the block changes nothing
        model(x).sum().backward()
    expected = torch.autograd.grad(model(x).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)
    assert can_abandon(model, torch.device("cpu"), compiled=False)
    assert not can_abandon(model, torch.device("cpu"), compiled=True)
    assert not can_abandon(nn.Sequential(nn.BatchNorm1d(4)), torch.device("cpu"), False)


class ArmAfter(SilentReporter):
    """Arms the Ctrl-C after `batches` finished steps."""

    def __init__(self, state: dict, batches: int) -> None:
        self.state, self.batches, self.done = state, batches, 0

    def batch_done(self, loss: float, lr: float, samples_per_s: float) -> None:
        self.done += 1
        self.state["armed"] = self.done == self.batches


def test_ctrl_c_mid_step_drops_the_step_and_resumes_exactly(small_demo, tmp_path):
    whole = config(small_demo, tmp_path / "whole")
    train(whole)
    state = {"armed": False, "calls": 0, "sent": False, "after": 0}

    def press_ctrl_c_midway(module, args):
        if state["sent"]:
            state["after"] += 1
        elif state["armed"]:
            state["calls"] += 1
            if state["calls"] == 5:  # inside the forward pass of step 11
                state["sent"] = True
                signal.raise_signal(signal.SIGINT)

    handle = register_module_forward_pre_hook(press_ctrl_c_midway)
    split = config(small_demo, tmp_path / "split")
    try:
        with pytest.raises(TrainingInterrupted, match="after batch 2"):
            train(split, reporter=ArmAfter(state, 10))  # 8 batches per epoch
    finally:
        handle.remove()
    assert state["sent"] and state["after"] == 0  # not one more module ran
    saved = read_checkpoint(tmp_path / "split/last.pt")["progress"]
    assert (saved["epoch"], saved["batch"]) == (1, 2)  # step 11 dropped, not counted
    train(split, resume=True)
    for name, tensor in read_checkpoint(tmp_path / "whole/last.pt")["model"].items():
        torch.testing.assert_close(read_checkpoint(tmp_path / "split/last.pt")["model"][name],
                                   tensor, rtol=0, atol=1e-6)


def test_recorded_stops_take_what_a_deferred_block_held_instead_of_raising():
    """Under `recorded_stops` (torchrun's ranks agree on a stop before taking it) a SIGTERM is
    recorded, also one a `deferred_interrupts` block held; outside it, the held SIGTERM is
    raised at the block's end as before, and the handlers are restored."""
    from fastast_cli.signals import (
        Stopped,
        deferred_interrupts,
        install_stop_handlers,
        recorded_stops,
        stop_exception,
    )

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    install_stop_handlers()
    try:
        with recorded_stops() as stops:
            signal.raise_signal(signal.SIGTERM)
            with deferred_interrupts():
                signal.raise_signal(signal.SIGINT)
            assert stops == [signal.SIGTERM, signal.SIGINT]
        with pytest.raises(Stopped), deferred_interrupts():
            signal.raise_signal(signal.SIGTERM)
        assert isinstance(stop_exception(signal.SIGTERM), Stopped)
        assert type(stop_exception(signal.SIGINT)) is KeyboardInterrupt
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
