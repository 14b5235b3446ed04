"""One training step's clips as a named record: what the loader yields and the loop reads.

A training item is a dataset item `(fbank, target, partner, λ[, teacher input])` (the dataset
built with `return_mix`; the teacher input when a teacher reads its own view of the clip)
followed by `(index, view)` from `training.sampling.SeededItems`. `collate_batch` stacks B such
items into one `Batch`; nothing else reads their positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import default_collate

from fastast_cli.data.elastic_features import collate_native
from fastast_cli.evaluation.predict import Fbanks


@dataclass
class Mix:
    """Which clips a training batch mixed: item `index` [B] with `partner` [B] by weight `lam`
    [B] (partner = index and lam = 1 for unmixed items)."""

    index: torch.Tensor
    partner: torch.Tensor
    lam: torch.Tensor

    def apply(self, per_clip: torch.Tensor) -> torch.Tensor:
        """Per-clip values [N, C] → the batch's mixed values [B, C]: λ·v_i + (1-λ)·v_partner.
        Teacher predictions are mixed so as probabilities (`losses.teacher_targets`), as
        EfficientAT mixes its stored ones (its λ-weighted losses of the two targets are the
        loss of this mixed target)."""
        lam = self.lam.to(per_clip.dtype)[:, None]
        return lam * per_clip[self.index] + (1 - lam) * per_clip[self.partner]


@dataclass
class Batch:
    """B training clips.

    fbank: the student's input, normalized fbank [B, T, F] float32, or a list of B
        native-length clips [T_i, F] (ElasticAST);
    target: multi-hot labels [B, C] float32, mixed as the clips were;
    mix: which dataset clips each item is and was mixed with (`Mix`: index, partner, λ, [B]);
    view: which stored augmented view each item replays [B] int64 (-1: none, drawn afresh);
    teacher_input: what an online teacher reads instead of `fbank` (a fixed-length teacher of
        an ElasticAST student: the clips at q = 1 [B, T', F]; a teacher with its own front
        end: their audio [B, samples]), None when it reads `fbank`.
    """

    fbank: Fbanks
    target: torch.Tensor
    mix: Mix
    view: torch.Tensor
    teacher_input: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.fbank)

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (the DataLoader's `pin_memory` calls this)."""
        fbank = ([clip.pin_memory() for clip in self.fbank] if isinstance(self.fbank, list)
                 else self.fbank.pin_memory())
        mix = Mix(*(part.pin_memory() for part in (self.mix.index, self.mix.partner,
                                                   self.mix.lam)))
        teacher_input = None if self.teacher_input is None else self.teacher_input.pin_memory()
        return Batch(fbank, self.target.pin_memory(), mix, self.view.pin_memory(), teacher_input)


def collate_batch(items: Sequence[tuple], native_length: bool = False) -> Batch:
    """DataLoader collate of training items (see the module docstring) into a `Batch`: the
    fbanks stacked, or kept as a list for a native-length model; every other field stacked."""
    columns = collate_native(items) if native_length else default_collate(items)
    fbank, target, partner, lam, *teacher_input, index, view = columns
    return Batch(fbank, target, Mix(index, partner, lam), view,
                 teacher_input[0] if teacher_input else None)
