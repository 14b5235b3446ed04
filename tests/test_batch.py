"""A training batch is a named record: `collate_batch` names what SeededItems' items hold."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from fastast_cli.training.batch import Batch, collate_batch
from fastast_cli.training.sampling import SeededItems


class Items(Dataset):
    """Items as a `return_mix` dataset gives them: (fbank, target, partner, λ[, teacher input]),
    with clip i's fbank [T_i, 4] filled with i, its target one-hot, partner i + 1 mod N."""

    def __init__(self, count: int = 5, native: bool = False, teacher: bool = False) -> None:
        self.count, self.native, self.teacher = count, native, teacher

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple:
        frames = 3 + index if self.native else 6
        item = (torch.full((frames, 4), float(index)), torch.eye(self.count)[index],
                (index + 1) % self.count, 0.25 * index)
        return (*item, torch.full((8,), -float(index))) if self.teacher else item


def batches(dataset: Dataset, native: bool, views: int = 0) -> list[Batch]:
    items = SeededItems(dataset, seed=0, views=views)
    loader = DataLoader(items, batch_size=3, shuffle=False,
                        collate_fn=lambda chunk: collate_batch(chunk, native_length=native))
    return list(loader)


def test_fixed_length_batch_names_every_field():
    first, second = batches(Items(), native=False)
    assert isinstance(first, Batch) and (len(first), len(second)) == (3, 2)
    assert first.fbank.shape == (3, 6, 4)
    torch.testing.assert_close(first.fbank[:, 0, 0], torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(first.target, torch.eye(5)[:3])
    assert first.mix.index.tolist() == [0, 1, 2]
    assert first.mix.partner.tolist() == [1, 2, 3]
    torch.testing.assert_close(first.mix.lam, torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64))
    assert first.view.tolist() == [-1, -1, -1] and first.teacher_input is None
    assert second.mix.index.tolist() == [3, 4] and second.mix.partner.tolist() == [4, 0]


def test_native_length_batch_keeps_clips_apart_and_carries_the_teacher_input():
    first, _ = batches(Items(native=True, teacher=True), native=True, views=2)
    assert isinstance(first.fbank, list)
    assert [clip.shape[0] for clip in first.fbank] == [3, 4, 5]
    assert first.teacher_input is not None and first.teacher_input.shape == (3, 8)
    torch.testing.assert_close(first.teacher_input[:, 0], torch.tensor([0.0, -1.0, -2.0]))
    assert first.mix.index.tolist() == [0, 1, 2]
    assert all(view in (0, 1) for view in first.view.tolist())  # a replayed view, not -1


class RandomItems(Dataset):
    """Items that draw from torch's global generator, as SpecAugment and mixup do."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple:
        return (torch.rand(3),)


def test_an_item_seeds_the_cpu_generator_alone_and_restores_it(monkeypatch):
    """Item i of epoch e draws what `torch.manual_seed(item_seed(seed, e, i))` gives, leaves
    the global generator where it was, and never reseeds CUDA (which would reset a GPU
    training's dropout stream once per item)."""
    from fastast_cli.training.sampling import item_seed, view_seed

    reseeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    items = SeededItems(RandomItems(), seed=7)
    items.set_epoch(2)
    before = torch.get_rng_state()
    drawn = [items[index][0] for index in range(4)]
    replayed = [SeededItems(RandomItems(), seed=7, views=3)[index][0] for index in range(4)]
    assert torch.equal(torch.get_rng_state(), before)
    assert reseeded == []
    for index in range(4):
        expected = torch.Generator().manual_seed(item_seed(7, 2, index))
        assert torch.equal(drawn[index], torch.rand(3, generator=expected))
    view = SeededItems(RandomItems(), seed=7, views=3)[1][2]
    expected = torch.Generator().manual_seed(view_seed(7, view, 1))
    assert torch.equal(replayed[1], torch.rand(3, generator=expected))


def test_a_training_steps_draws_depend_on_seed_step_and_rank_alone():
    from fastast_cli.training.sampling import seed_step

    def draws(seed: int, step: int, rank: int) -> torch.Tensor:
        torch.rand(7)  # whatever was drawn before does not matter
        seed_step(seed, step, rank, torch.device("cpu"))
        return torch.rand(4)

    assert torch.equal(draws(3, 10, 0), draws(3, 10, 0))
    assert not torch.equal(draws(3, 10, 0), draws(3, 10, 1))  # torchrun's ranks draw apart
    assert not torch.equal(draws(3, 10, 0), draws(3, 11, 0))
    assert not torch.equal(draws(3, 10, 0), draws(4, 10, 0))
