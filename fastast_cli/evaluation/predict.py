"""Model outputs over a whole dataset, in order, for metrics and saved predictions."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] (float32, CPU) of `model` on every item of `dataset`, and targets [N, C].

    The model is put in eval mode; items are `(fbank, target, ...)` tuples.
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    outputs, targets = [], []
    with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=amp):
        for fbank, target, *_ in loader:
            outputs.append(model(fbank.to(device)).float().cpu())
            targets.append(target)
    if not outputs:
        raise ValueError("the dataset is empty: nothing to predict")
    return torch.cat(outputs), torch.cat(targets)
