"""Model outputs over a whole dataset, in order, for metrics and saved predictions."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fastast_cli.progress import track

Batch = torch.Tensor | list[torch.Tensor]


def to_device(fbank: Batch, device: torch.device) -> Batch:
    """A batch on `device`: one tensor [B, T, F], or a list of native-length clips [T_i, F]."""
    if isinstance(fbank, list):
        return [clip.to(device, non_blocking=True) for clip in fbank]
    return fbank.to(device, non_blocking=True)


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    forward: Callable[[Batch], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] (float32, CPU) of `model` on every item of `dataset`, and targets [N, C].

    The model is put in eval mode; items are `(fbank, target, ...)` tuples; `collate_fn` batches
    them (`collate_native` for native-length clips). `forward` runs the batches instead of the
    model itself (a backend's fbank → logits callable, see export.backends).
    """
    model.eval()
    forward = forward or model
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_fn)
    outputs, targets = [], []
    with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=amp):
        for fbank, target, *_ in track(loader, "evaluate", transient=True):
            outputs.append(forward(to_device(fbank, device)).float().cpu())
            targets.append(target)
    if not outputs:
        raise ValueError("the dataset is empty: nothing to predict")
    return torch.cat(outputs), torch.cat(targets)
