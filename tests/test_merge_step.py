"""The merge step's cost: row copies and scatters with precomputed indices, the same bits as the
plain gather / boolean-mask formulation, and no op that waits for the device in the packed path
(boolean-mask indexing runs `nonzero`, a host sync per index on CUDA)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from fastast_cli import build_model
from fastast_cli.models.elastic import build_elastic
from fastast_cli.models.reduction import METHODS
from fastast_cli.models.reduction.layout import ClipView, Layout
from fastast_cli.models.reduction.matching import PackedMatching, ReductionStep
from fastast_cli.models.reduction.tome import bipartite_soft_matching

pytestmark = pytest.mark.usefixtures("one_thread")

SYNCING_OPS = {"aten::nonzero", "aten::_local_scalar_dense", "aten::masked_select",
               "aten::item"}


def syncing_ops(run) -> list[str]:
    """The aten ops of `run()` that wait for the device on CUDA."""
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return [event.name for event in prof.events() if event.name in SYNCING_OPS]


@pytest.mark.parametrize("name", list(METHODS))
def test_the_packed_merge_step_never_waits_for_the_device(name):
    torch.manual_seed(0)
    model = build_elastic("tiny", 4, target_length=128, depth=3, max_tokens=80).eval()
    model.set_r(5, method=name)
    generator = torch.Generator().manual_seed(1)
    clips = [torch.randn(frames, 128, generator=generator) for frames in (48, 16, 32, 64)]
    assert syncing_ops(lambda: model(clips)) == []


@pytest.mark.parametrize("name", list(METHODS))
def test_the_dense_merge_step_never_waits_for_the_device(name):
    torch.manual_seed(0)
    model = build_model("tiny", 4, target_length=64, depth=3).eval().set_r(6, method=name)
    assert syncing_ops(lambda: model(torch.randn(2, 64, 128))) == []


def gather_merge(matching, values: torch.Tensor, reduce: str) -> torch.Tensor:
    """ToMe's merge written with gathers on the A/B views (the reference formulation)."""
    channels = values.shape[-1]
    kept, mergeable = values[:, : matching.protected], values[:, matching.protected :]
    set_a, set_b = mergeable[:, ::2], mergeable[:, 1::2]
    stay = set_a.gather(1, matching.unmerged.expand(-1, -1, channels))
    go = set_a.gather(1, matching.merged.expand(-1, -1, channels))
    set_b = set_b.scatter_reduce(1, matching.partner.expand(-1, -1, channels), go, reduce=reduce)
    return torch.cat([kept, stay, set_b], dim=1)


@pytest.mark.parametrize("length", [13, 14])
@pytest.mark.parametrize("reduce", ["sum", "amax"])
def test_dense_merge_has_the_bits_of_the_gather_formulation(length, reduce):
    generator = torch.Generator().manual_seed(2)
    keys = torch.randn(3, length, 8, generator=generator)
    keys[1, 4:10] = keys[1, 3]  # ties: equal similarities everywhere in that stretch
    values = torch.randn(3, length, 5, generator=generator)
    for r in (1, 3, (length - 2) // 2):
        matching = bipartite_soft_matching(keys, r, protected=2)
        assert torch.equal(matching.merge(values, reduce), gather_merge(matching, values, reduce))
        unmerged = matching.unmerged.expand(-1, -1, 5)
        pruned = torch.cat([values[:, :2], values[:, 2::2].gather(1, unmerged),
                            values[:, 3::2]], dim=1)
        assert torch.equal(matching.keep(values), pruned)


def test_the_weighted_average_changes_only_the_groups_that_take_a_token():
    generator = torch.Generator().manual_seed(4)
    keys = torch.randn(2, 15, 8, generator=generator)
    tokens = torch.randn(2, 15, 6, generator=generator) * 100
    sizes = torch.randint(1, 5, (2, 15, 1), generator=generator).float()
    matching = bipartite_soft_matching(keys, 5, protected=2)
    merged, merged_sizes = matching.combine(tokens, sizes)
    groups = matching.merge(torch.eye(15).repeat(2, 1, 1), reduce="amax").bool()  # [2, 10, 15]
    lone = 0
    for row in range(2):
        for slot, members in enumerate(groups[row]):
            x, s = tokens[row, members], sizes[row, members]
            assert merged_sizes[row, slot, 0] == s.sum()
            if len(x) == 1:  # nothing joined: the token itself, bit for bit
                assert torch.equal(merged[row, slot], x[0])
                lone += 1
            else:
                mean = (s.double() * x.double()).sum(0) / s.sum()  # float64 reference
                torch.testing.assert_close(merged[row, slot].double(), mean, rtol=1e-6,
                                           atol=1e-4)
    assert 0 < lone < 20
    # groups whose weights are all zero keep their slot's own token (EViT's weights can be)
    unweighted, total = matching.weighted_average(tokens, torch.zeros_like(sizes))
    assert torch.equal(unweighted, matching.keep(tokens)) and not total.any()


def test_the_step_gives_the_keys_summed_and_averaged_over_heads():
    generator = torch.Generator().manual_seed(6)
    key = torch.randn(2, 3, 9, 4, generator=generator)  # [R, H, L, hd]
    step = ReductionStep(torch.randn(2, 9, 12), key, key, None, [2], 0, 1, 2)
    torch.testing.assert_close(step.summed_keys(), key.sum(dim=1))
    torch.testing.assert_close(step.mean_keys(), key.mean(dim=1))


ELEMENTWISE = {"aten::mul", "aten::mul_", "aten::div", "aten::div_", "aten::add", "aten::sub",
               "aten::add_", "aten::sub_"}


def test_the_weighted_average_does_arithmetic_only_on_the_tokens_that_move():
    generator = torch.Generator().manual_seed(5)
    tokens = torch.randn(4, 50, 32, generator=generator)
    sizes = torch.randint(1, 4, (4, 50, 1), generator=generator).float()
    matching = bipartite_soft_matching(torch.randn(4, 50, 8, generator=generator), 6, 2)
    matching.flat_index(50)  # the indices are built once per matching, outside the average
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU],
                                         record_shapes=True) as prof:
        matching.combine(tokens, sizes)
    moved = 4 * 6 * 32  # B·r rows of D: the only rows weighted
    arithmetic = [math.prod(event.input_shapes[0]) for event in prof.events()
                  if event.name in ELEMENTWISE]
    assert arithmetic and max(arithmetic) <= moved


def test_packed_matching_from_destination_has_the_bits_of_boolean_indexing():
    generator = torch.Generator().manual_seed(3)
    layout = Layout.pack([7, 4, 9], 12)
    after = layout.resized([5, 3, 6])
    # every token's new slot: clip c's staying tokens in order, merged ones onto a staying slot
    merged = torch.zeros(20, dtype=torch.bool)
    merged[[3, 5, 9, 14, 17, 19]] = True
    stays = (~merged).nonzero()[:, 0]
    destination = torch.empty(20, dtype=torch.long)
    destination[stays] = torch.arange(14)
    destination[merged] = torch.randint(0, 14, (6,), generator=generator)
    matching = PackedMatching.from_destination(destination, merged, after)
    token = torch.arange(20)
    kept = torch.empty(14, dtype=torch.long)
    kept[destination[~merged]] = token[~merged]
    assert torch.equal(matching.stay, kept)
    assert torch.equal(matching.merged, token[merged])
    assert torch.equal(matching.into, destination[merged])


def test_clip_view_scatter_writes_every_real_entry_and_the_prefix():
    layout = Layout.pack([5, 3, 6], 10)  # mergeable 3, 1, 4: padded to 4
    view = ClipView.of_clips(torch.zeros(14, 2), layout, [1, 0, 2], protected=2)
    values = torch.arange(12, dtype=torch.float).view(3, 4)
    flat = view.scatter(values, -1.0)[:, 0]
    assert flat.tolist() == [-1, -1, 0, 1, 2, -1, -1, 4, -1, -1, 8, 9, 10, 11]


def test_host_built_index_tensors_reach_the_device_without_a_blocking_copy(monkeypatch):
    """`host_to_device` copies a host-built tensor to CUDA from pinned memory, asynchronously
    (a copy from pageable memory waits for the device: one sync per index tensor of every
    merging block); elsewhere it is a plain `.to`."""
    from fastast_cli.models.reduction.layout import device_tensor, host_to_device

    calls: list[tuple] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory",
                        lambda self: calls.append(("pin",)) or self.clone())
    monkeypatch.setattr(torch.Tensor, "to",
                        lambda self, *args, **kwargs: calls.append(("to", args, kwargs)) or self)
    values = host_to_device(torch.tensor([3, 1, 2]), torch.device("cuda"))
    assert values.tolist() == [3, 1, 2]
    assert calls == [("pin",), ("to", (torch.device("cuda"),), {"non_blocking": True})]
    calls.clear()
    host_to_device(torch.tensor([1]), torch.device("cpu"))
    assert calls == [("to", (torch.device("cpu"),), {})]
    calls.clear()  # under torch.compile: Dynamo cannot trace pinning, a plain copy then
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    host_to_device(torch.tensor([1]), torch.device("cuda"))
    assert calls == [("to", (torch.device("cuda"),), {})]
    monkeypatch.undo()
    made = device_tensor((4, 0, 7), torch.device("cpu"))
    assert made.dtype == torch.long and made.tolist() == [4, 0, 7]


def test_the_models_build_no_device_tensor_from_host_values_directly():
    """Every `torch.tensor(..., device=...)` in the model code would be a blocking (syncing)
    copy on CUDA: host values go through `device_tensor` / `host_to_device` instead."""
    import ast
    from pathlib import Path

    import fastast_cli.models as models

    offenders = []
    for path in Path(models.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("tensor", "as_tensor")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and any(keyword.arg == "device" for keyword in node.keywords)):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_evit_ranks_tokens_by_float32_attention_also_under_amp(monkeypatch):
    """AMP runs `bmm` in half precision; EViT's prefix attention (the ranking it keeps tokens
    by) asks for float32 and gets it under autocast too."""
    from fastast_cli import build_model

    torch.manual_seed(0)
    model = build_model("tiny", 10, target_length=200, fstride=16, tstride=16, depth=4)
    model.set_r(8, method="evit")
    products: list[torch.dtype] = []
    bmm = torch.bmm

    def recorded(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        out = bmm(first, second)
        products.append(out.dtype)
        return out

    monkeypatch.setattr(torch, "bmm", recorded)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        logits = model(torch.randn(2, 200, 128))
    assert logits.dtype == torch.bfloat16  # the model itself ran under AMP
    assert products and set(products) == {torch.float32}
