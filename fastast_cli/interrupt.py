"""Ctrl-C (or SIGTERM, SIGHUP) during a long training step on the CPU: stop at the next module,
not at the step's end.

A training step holds Ctrl-C off until it is done (`atomic.deferred_interrupts`), so that a
step and its count are saved together; on a CPU one step of a base AST takes a minute or more.
`abandonable` marks the part of a step that has changed nothing yet (the forward and backward
passes, before the optimizer's update): a Ctrl-C there stops the pass at the next module called
in the forward pass or the next module input reached by the backward pass, and the step is
dropped whole, as if it had not begun (its batch is trained again on --resume, the saved state
is the one after the step before). A Ctrl-C anywhere else is held off as before.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from fastast_cli.signals import STOP_SIGNALS, stop_exception


def can_abandon(network: nn.Module, device: torch.device, compiled: bool) -> bool:
    """Whether a step of `network` may be dropped midway: on the CPU (elsewhere steps are
    short), eager (hooks would break a compiled graph), and with no module whose forward pass
    in training updates state (BatchNorm's running statistics)."""
    return device.type == "cpu" and not compiled and not any(
        module.training and getattr(module, "track_running_stats", False)
        for module in network.modules())


@contextmanager
def abandonable(enabled: bool = True) -> Iterator[None]:
    """Within the block, a Ctrl-C raises KeyboardInterrupt at the next module forward call or
    module-input gradient (and at the end of the block, if none came): see module docstring.
    Outside the main thread, or with `enabled` False, the block runs as is."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    requested: list[int] = []
    active = [True]  # hooks left on tensors that outlive the block do nothing after it

    def check(*_: Any) -> None:
        if requested and active:
            raise stop_exception(requested[0])

    def before_module(module: nn.Module, args: tuple[Any, ...]) -> None:
        check()
        for value in args:  # the backward pass checks again when it reaches this input
            if isinstance(value, torch.Tensor) and value.requires_grad:
                value.register_hook(check)

    previous = {signum: signal.signal(signum, lambda number, frame: requested.append(number))
                for signum in STOP_SIGNALS}
    handle = register_module_forward_pre_hook(before_module)
    try:
        yield
        check()  # a Ctrl-C after the last check still drops the step
    finally:
        active.clear()
        handle.remove()
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
