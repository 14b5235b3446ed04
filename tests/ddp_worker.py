"""Run by test_training's DDP test under torchrun: trains, then saves this rank's weights and
the number of clips it validated."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from fastast_cli.distributed import close_ranks, init_ranks
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.loop import SilentReporter, Trainer

data, out = sys.argv[1], Path(sys.argv[2])
config = TrainConfig(model="ast", size="tiny", depth=2, fstride=16, tstride=16, data=data,
                     out=str(out), epochs=2, batch_size=4, lr=2e-4, loss="ce", num_workers=0,
                     device="cpu", r=4, freqm=8, timem=16)
ranks = init_ranks(torch.device("cpu"))
trainer = Trainer(config, ranks, torch.device("cpu"), SilentReporter())
validated = []  # clips of each forward pass in eval mode (the model itself: not through DDP)
trainer.model.register_forward_pre_hook(
    lambda module, args: None if module.training else validated.append(len(args[0])))
trainer.run(resume=False)
torch.save(trainer.model.state_dict(), out / f"rank{ranks.rank}.pt")
torch.save(sum(validated), out / f"validated{ranks.rank}.pt")
close_ranks(ranks)
