"""Model outputs over a whole dataset, in order, for metrics and saved predictions; under
torchrun each rank runs its shard and every rank gets the whole, gathered in order."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from fastast_cli.devices import autocast
from fastast_cli.distributed import Ranks, current_ranks
from fastast_cli.progress import track
from fastast_cli.signals import ignore_stop_signals

Fbanks = torch.Tensor | list[torch.Tensor]  # [B, T, F], or B native-length clips [T_i, F]


def to_device(fbank: Fbanks, device: torch.device) -> Fbanks:
    """A batch on `device`: one tensor [B, T, F], or a list of native-length clips [T_i, F]."""
    if isinstance(fbank, list):
        return [clip.to(device, non_blocking=True) for clip in fbank]
    return fbank.to(device, non_blocking=True)


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    forward: Callable[[Fbanks], torch.Tensor] | None = None,
    ranks: Ranks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] (float32, CPU) of `model` on every item of `dataset`, and targets [N, C].

    The model is put in eval mode; items are `(fbank, target, ...)` tuples. `dtype`: float32
    runs the model as it is (as AST validates); float16 or bfloat16 under autocast (mixed
    precision, as training's AMP). `collate_fn` batches
    them (`collate_native` for native-length clips). `forward` runs the batches instead of the
    model itself (a backend's fbank → logits callable, see inference.backends). With several
    `ranks` (default: the process group joined, if any) each rank scores its shard of the items
    and the outputs of all ranks are gathered, in the dataset's order, on every rank: all ranks
    must call this together.
    """
    ranks = ranks or current_ranks()
    if ranks.active:
        dataset = Subset(dataset, ranks.shard(len(dataset)))  # type: ignore[arg-type]
    model.eval()
    forward = forward or model
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_fn, worker_init_fn=ignore_stop_signals)
    outputs, targets = [], []
    batches = track(loader, "evaluate", transient=True) if ranks.is_main else loader
    with torch.inference_mode(), autocast(device, dtype):
        for fbank, target, *_ in batches:
            outputs.append(forward(to_device(fbank, device)).float().cpu())
            targets.append(target)
    if ranks.active:
        outputs, targets = ranks.gather_shards(outputs), ranks.gather_shards(targets)
    if not outputs:
        raise ValueError("the dataset is empty: nothing to predict")
    return torch.cat(outputs), torch.cat(targets)
