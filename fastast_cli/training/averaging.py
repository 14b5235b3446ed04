"""Checkpoint weight averaging (AST's AudioSet recipe): the mean of the weights at the end of
each epoch in [average_from, average_to], kept as a running mean so it costs one copy."""

from __future__ import annotations

import copy

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]


def averaging_epoch(average_from: int | None, average_to: int | None, epoch: int) -> bool:
    """Whether the weights at the end of `epoch` (1-based) join the average."""
    return average_from is not None and average_from <= epoch <= (average_to or 0)


def accumulate(averaged: StateDict | None, count: int, model: nn.Module) -> StateDict:
    """The running mean (float32, CPU) of `count` epochs' weights with `model`'s weights added:
    mean_{n+1} = mean_n + (w - mean_n) / (n + 1)."""
    state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    if averaged is None or count == 0:
        return state
    for name, value in state.items():
        averaged[name] += (value - averaged[name]) / (count + 1)
    return averaged


def averaged_model(model: nn.Module, averaged: StateDict) -> nn.Module:
    """A copy of `model` holding the averaged weights, in the model's own dtypes."""
    reference = model.state_dict()
    copied = copy.deepcopy(model)
    copied.load_state_dict({k: v.to(reference[k].dtype) for k, v in averaged.items()})
    return copied
