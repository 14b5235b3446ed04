"""Run by test_training's DDP tests under torchrun: trains (a tiny AST, or with `cnn` as the
third argument a MobileNetV3 with BatchNorm), then saves this rank's weights and buffers, the
number of clips it validated, and each training step's learning rate and clips. With `stop`,
rank 1 alone sends itself SIGTERM after its second step (with `nan`, its second loss is NaN),
and each rank saves where it stopped and what it was told."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

import fastast_cli.training.loop as loop_module
from fastast_cli.distributed import close_ranks, init_ranks
from fastast_cli.errors import FastASTError
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.loop import SilentReporter, Trainer, TrainingInterrupted

DDP_CONFIG = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16,
              "epochs": 2, "batch_size": 4, "lr": 2e-4, "loss": "ce", "num_workers": 0,
              "device": "cpu", "r": 4, "freqm": 8, "timem": 16}
CNN_CONFIG = {**DDP_CONFIG, "model": "mobilenetv3-small", "r": 0, "lr": 1e-3}


def record_steps(trainer: Trainer) -> list[tuple[int, float, list[int]]]:
    """(epoch, lr, clip indices) of every step the trainer takes from now on."""
    steps: list[tuple[int, float, list[int]]] = []
    step = trainer._step

    def recorded(network, batch, lr):
        steps.append((trainer.progress.epoch, lr, batch.mix.index.tolist()))
        return step(network, batch, lr)

    trainer._step = recorded  # type: ignore[method-assign]
    return steps


if __name__ == "__main__":
    data, out = sys.argv[1], Path(sys.argv[2])
    settings = CNN_CONFIG if sys.argv[3:] == ["cnn"] else DDP_CONFIG
    config = TrainConfig(**settings, data=data, out=str(out))
    ranks = init_ranks(torch.device("cpu"))
    trainer = Trainer(config, ranks, torch.device("cpu"), SilentReporter())
    validated = []  # clips of each forward pass in eval mode (the model itself: not through DDP)
    trainer.model.register_forward_pre_hook(
        lambda module, args: None if module.training else validated.append(len(args[0])))
    steps = record_steps(trainer)
    if sys.argv[3:] in (["stop"], ["nan"]):
        step, loss_of = trainer._step, loop_module.distillation_loss

        def stopping(network, batch, lr):
            loss = step(network, batch, lr)
            if ranks.rank == 1 and trainer.progress.step == 1:  # its second step ends here
                os.kill(os.getpid(), signal.SIGTERM)
            return loss

        def poisoned(*args, **kwargs):
            loss = loss_of(*args, **kwargs)
            return loss * float("nan") if ranks.rank == 1 and trainer.progress.step == 1 else loss

        if sys.argv[3] == "stop":
            trainer._step = stopping  # type: ignore[method-assign]
        else:
            loop_module.distillation_loss = poisoned
        try:
            trainer.run(resume=False)
        except (TrainingInterrupted, FastASTError) as error:
            torch.save({"step": trainer.progress.step, "message": str(error),
                        "exit_code": getattr(error, "exit_code", 1)},
                       out / f"stopped{ranks.rank}.pt")
        close_ranks(ranks)
        sys.exit(0)
    trainer.run(resume=False)
    torch.save(trainer.model.state_dict(), out / f"rank{ranks.rank}.pt")
    torch.save(sum(validated), out / f"validated{ranks.rank}.pt")
    torch.save({"steps": steps, "warmup": trainer.warmup_steps}, out / f"steps{ranks.rank}.pt")
    close_ranks(ranks)
