"""What a run says before and just after it starts: the plan (model, parameters, clips,
device) and, after its first steps, how long it will take, with a warning when a CPU run
will take hours."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from fastast_cli.training.config import TrainConfig

WARN_AFTER_S = 3600.0  # a CPU run estimated this long or longer gets a warning
SKIPPED_STEPS = 1  # the first steps start workers and fill caches: not timed
TIMED_STEPS = 5


def model_name(config: TrainConfig) -> str:
    """e.g. `tiny AST (4 blocks, 16×16 patches every 16/16 frames/bins)`, `mobilenetv3-small`."""
    if config.model != "ast":
        return config.model
    kind = "ElasticAST" if config.elastic else "AST"
    return (f"{config.size} {kind} ({config.depth} blocks, patches every {config.tstride} "
            f"frames × {config.fstride} bins)")


def parameter_count(model: nn.Module) -> str:
    """Trainable parameters, e.g. `5.5 M`."""
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{count / 1e6:.2f} M" if count < 1e8 else f"{count / 1e6:.0f} M"


def device_name(device: torch.device) -> str:
    """e.g. `cpu (2 threads)`, `cuda:0 (NVIDIA H100)`."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    threads = torch.get_num_threads()
    return f"{device.type} ({threads} thread{'s' if threads != 1 else ''})"


def plan_line(config: TrainConfig, model: nn.Module, *, train_clips: int, eval_clips: int,
              eval_split: str, clip_frames: int, device: torch.device, steps_per_epoch: int
              ) -> str:
    """The run in one line: model, parameters, clips, clip length, loss, epochs, device."""
    return (f"plan: {model_name(config)}, {parameter_count(model)} parameters; "
            f"{train_clips} training clips, {eval_clips} {eval_split} clips of "
            f"{clip_frames / 100:.2f} s; {config.loss} loss, {config.epochs} "
            f"epoch{'s' if config.epochs != 1 else ''} × "
            f"{steps_per_epoch} steps of {config.batch_size}; {device_name(device)}")


def duration(seconds: float) -> str:
    """e.g. `45 s`, `12 min`, `3.2 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class TimeEstimate:
    """Times a run's first steps (after SKIPPED_STEPS) and says once how long the rest takes.

    `step_done(steps_left)` after each step returns the estimate line once TIMED_STEPS steps
    are timed, then None; `warning` holds a line when a CPU run is estimated at hours (`tiny`:
    the model is already the smallest, so no smaller one is suggested).
    """

    def __init__(self, device: torch.device,
                 clock: Callable[[], float] = time.perf_counter, tiny: bool = False) -> None:
        self.device, self.clock, self.tiny = device, clock, tiny
        self.steps = 0
        self.started: float | None = None
        self.done = False
        self.warning: str | None = None

    def step_done(self, steps_left: int) -> str | None:
        self.steps += 1
        if self.done:
            return None
        if self.steps == SKIPPED_STEPS:
            self.started = self.clock()
            return None
        if self.started is None or self.steps < SKIPPED_STEPS + TIMED_STEPS:
            return None
        self.done = True
        if steps_left <= 0:
            return None
        per_step = (self.clock() - self.started) / (self.steps - SKIPPED_STEPS)
        seconds = per_step * steps_left
        if self.device.type == "cpu" and seconds >= WARN_AFTER_S:
            smaller = "" if self.tiny else "a smaller model (--size tiny --depth 4), "
            self.warning = (
                f"warning: this run will take about {duration(seconds)} on this CPU. For a "
                f"first result sooner: fewer --epochs, {smaller}shorter clips (prepare "
                "--target-length), or a GPU; on a busy machine OMP_NUM_THREADS=1 can help. "
                "Ctrl-C keeps last.pt and --resume continues")
        return (f"estimated time: {duration(seconds)} for the {steps_left} steps left "
                f"({per_step:.2f} s per step; validation not included)")
