"""Token-reduction methods (tome, pitome, evit, tofu, random): equal cost, both layouts, and each
method's defining property on constructed tokens."""

from __future__ import annotations

import math

import pytest
import torch

from fastast_cli import build_model
from fastast_cli.models.elastic import ElasticAST, build_elastic
from fastast_cli.models.pos_embed import join_pos_embed, split_pos_embed
from fastast_cli.models.reduction import METHODS, make_method
from fastast_cli.models.reduction.evit import EViT
from fastast_cli.models.reduction.layout import Layout
from fastast_cli.models.reduction.matching import ReductionStep, regroup
from fastast_cli.models.reduction.pitome import PiToMe
from fastast_cli.models.reduction.schedule import tokens_per_block
from fastast_cli.models.reduction.tofu import ToFu
from fastast_cli.models.reduction.tome import ToMe, bipartite_matching, bipartite_soft_matching
from fastast_cli.models.vit import TokenState

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = list(METHODS)
CLIP_FRAMES = (48, 16, 32, 64)  # 26, 10, 18 and 34 tokens


def fixed_model(depth: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("tiny", 4, target_length=64, depth=depth).eval()  # 2 + 60 tokens


TOKENS = 62  # of the fixed model


def elastic_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_elastic("tiny", 4, target_length=128, depth=4, max_tokens=70).eval()


def clips(seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(t, 128, generator=generator) for t in CLIP_FRAMES]


def block_counts(model: torch.nn.Module, inputs, dim: int) -> list[int]:
    """Tokens after every block (dim 1: per dense row; dim 0: all packed tokens)."""
    counts: list[int] = []
    hooks = [block.register_forward_hook(lambda m, a, out: counts.append(out.shape[dim]))
             for block in model.blocks]
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()
    return counts


def test_tome_is_first_and_unknown_names_or_options_are_refused():
    assert NAMES == ["tome", "pitome", "evit", "tofu", "random"]
    model = fixed_model()
    with pytest.raises(ValueError, match="choose one of tome, pitome, evit, tofu, random"):
        model.set_r(4, method="tomy")
    with pytest.raises(ValueError, match="bad options"):
        model.set_r(4, method="random", method_options={"sed": 1})
    assert model.set_r(4, method="pitome").reduction_method == "pitome"
    assert model.set_r(8).reduction_method == "pitome"  # set_r keeps the method in use
    assert model.set_r(4, method="tome").reduction_method == "tome"
    assert build_model("tiny", 2, target_length=32, method="evit").reduction_method == "evit"
    assert build_elastic("tiny", 2, target_length=32, method="tofu").reduction_method == "tofu"
    assert make_method("random", {"seed": 7}).seed == 7
    model.set_r(4, method="tofu", method_options={"switch": 2})
    assert model.reduction_options == {"switch": 2}
    model.set_r(4, method="tofu")  # the same method without options keeps them
    assert model.reduction_options == {"switch": 2}
    for name in NAMES:
        method = make_method(name)
        again = make_method(name, model.set_r(1, method=name).reduction_options)
        assert type(again) is type(method) and again.__dict__.keys() == method.__dict__.keys()


@pytest.mark.parametrize("name", NAMES)
def test_every_method_removes_exactly_r_tokens_per_block_in_both_layouts(name):
    fixed, elastic = fixed_model(), elastic_model()
    fixed.set_r(18, method=name)  # 60 → 42 → 24 → 12 (capped) → 6 (capped) patches
    counts = block_counts(fixed, torch.randn(2, 64, 128), 1)
    assert counts == tokens_per_block(TOKENS, [18] * 4, 2) == [44, 26, 14, 8]
    elastic.set_r(5, method=name)
    expected = [sum(per_clip) for per_clip in zip(
        *(tokens_per_block(n, [5] * 4, 2) for n in (26, 10, 18, 34)), strict=True)]
    assert block_counts(elastic, clips(), 0) == expected


@pytest.mark.parametrize("name", NAMES)
def test_r_zero_gives_the_same_logits_for_every_method(name):
    fixed, elastic = fixed_model(), elastic_model()
    fbank = torch.randn(2, 64, 128)
    with torch.no_grad():
        expected = fixed(fbank), elastic(clips())
        fixed.set_r(0, method=name)
        elastic.set_r(0, method=name)
        assert torch.equal(fixed(fbank), expected[0])
        assert torch.equal(elastic(clips()), expected[1])
        fixed.set_r(8, method=name)
        assert (fixed(fbank) - expected[0]).abs().max() > 1e-4  # the method does reduce


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("proportional", [True, False])
def test_packed_rows_give_each_clip_its_logits_alone(name, proportional):
    model = elastic_model().set_r(0.2, proportional_attention=proportional, method=name)
    with torch.no_grad():
        packed = model(clips())
        assert model.last_state.layout.num_rows < len(CLIP_FRAMES)  # clips do share rows
        alone = torch.cat([model([clip]) for clip in clips()])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def equivalent_pair(depth: int) -> tuple[torch.nn.Module, ElasticAST]:
    """A fixed AST with non-overlapping patches and an additive positional grid, and the
    ElasticAST made from it, which computes exactly what it computes (3 clips of 64 frames
    share packed rows of 80 tokens)."""
    torch.manual_seed(0)
    ast = build_model("tiny", 4, target_length=64, fstride=16, tstride=16, depth=depth).eval()
    prefix, _ = split_pos_embed(ast.pos_embed.data, ast.config.grid)
    f_dim, t_dim = ast.config.grid
    additive = torch.randn(1, 192, f_dim, 1) + torch.randn(1, 192, 1, t_dim)
    ast.pos_embed.data = join_pos_embed(prefix, additive)
    return ast, ElasticAST.from_ast(ast, target_length=128, max_tokens=80).eval()


@pytest.mark.parametrize("name", NAMES)
def test_packed_rows_reduce_as_the_fixed_ast(name):
    # Every method must choose and combine alike in both layouts (several clips share one
    # packed row).
    ast, elastic = equivalent_pair(depth=4)
    batch = torch.randn(3, 64, 128)
    with torch.no_grad():
        expected = ast.set_r(6, method=name)(batch)
        packed = elastic.set_r(6, method=name)(list(batch))
        assert elastic.last_state.layout.num_rows < 3
    torch.testing.assert_close(packed, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_prefix_is_kept_and_sources_partition_the_patches(name):
    model = fixed_model().set_r(10, method=name)
    model.track_source = True
    with torch.no_grad():
        model(torch.randn(3, 64, 128))
    state = model.last_state
    source = state.source  # [B, N, N0]
    assert torch.equal(source.sum(dim=1), torch.ones(3, TOKENS))  # every patch in one group
    assert torch.equal(source.sum(dim=2, keepdim=True), state.sizes)  # sizes = group sizes
    assert torch.equal(source[:, :2, :2], torch.eye(2).expand(3, -1, -1))  # CLS, DIST alone
    assert torch.equal(state.sizes[:, :2], torch.ones(3, 2, 1))


@pytest.mark.parametrize("name", NAMES)
def test_packed_sizes_stay_inside_each_clip(name):
    model = elastic_model().set_r(6, method=name)
    with torch.no_grad():
        model(clips())
    state = model.last_state
    per_clip = [int(part.sum()) for part in state.sizes.split(list(state.layout.counts))]
    assert per_clip == [26, 10, 18, 34]


@pytest.mark.parametrize("name", NAMES)
def test_every_method_runs_under_mixed_precision(name):
    fixed, elastic = fixed_model().set_r(10, method=name), elastic_model().set_r(5, method=name)
    fbank = torch.randn(2, 64, 128)
    with torch.no_grad():
        full = fixed(fbank), elastic(clips())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = fixed(fbank), elastic(clips())
    for low, high in zip(reduced, full, strict=True):
        assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
        torch.testing.assert_close(low.float(), high, atol=0.15, rtol=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_every_method_trains(name):
    model = fixed_model(depth=2).train().set_r(8, proportional_attention=False, method=name)
    fbank, target = torch.randn(4, 64, 128), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(fbank), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    qkv = model.blocks[0].attn.qkv.weight.grad
    assert torch.isfinite(qkv).all() and qkv.abs().sum() > 0
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


# --- constructed tokens ------------------------------------------------------------------------


def dense_step(tokens: torch.Tensor, keys: torch.Tensor, r: int, block: int = 0,
               query: torch.Tensor | None = None, sizes: torch.Tensor | None = None,
               ) -> tuple[ReductionStep, TokenState]:
    """A one-row dense step: tokens [1, N, D], per-head keys [1, H, N, hd]; and its state."""
    state = TokenState(sizes=sizes)
    bias = state.attention_bias(tokens.dtype, True)
    query = keys if query is None else query
    return ReductionStep(tokens, query, keys, None, [r], block, 12, 2, bias), state


def apply(case: tuple[ReductionStep, TokenState], method) -> tuple[torch.Tensor, torch.Tensor]:
    step, state = case
    return state.apply(method.match(step), step.tokens), state.sizes


def cluster_with_an_outlier(count: int, outlier: int) -> torch.Tensor:
    """Keys [1, 1, 2 + count, 8]: every mergeable token near one direction but `outlier`
    (mergeable index), orthogonal to it."""
    generator = torch.Generator().manual_seed(0)
    keys = torch.zeros(2 + count, 8)
    keys[:, 0] = 1.0
    keys += 0.01 * torch.randn(2 + count, 8, generator=generator)
    keys[2 + outlier] = torch.eye(8)[5]
    keys[:2] = torch.eye(8)[6:8]  # CLS and DIST
    return keys[None, None]


@pytest.mark.parametrize("count, r", [(8, 4), (10, 4)])
def test_pitome_protects_an_isolated_token_that_tome_merges(count, r):
    keys = cluster_with_an_outlier(count, outlier=2)  # an A token for ToMe
    tokens = torch.randn(1, 2 + count, 16)
    isolated = tokens[0, 4]
    merged, sizes = apply(dense_step(tokens, keys, r), PiToMe())
    assert merged.shape[1] == 2 + count - r
    found = (merged[0] == isolated).all(dim=-1)
    assert found.sum() == 1 and sizes[0, found, 0].item() == 1  # untouched, alone
    tome = bipartite_soft_matching(keys[:, 0], count // 2, 2)
    kept = TokenState().apply(tome, tokens)
    assert not (kept[0] == isolated).all(dim=-1).any()  # ToMe at r = T/2 merges it away


def test_pitome_protects_the_lowest_energy_tokens():
    generator = torch.Generator().manual_seed(3)
    keys, tokens = torch.randn(1, 1, 22, 8, generator=generator), torch.randn(1, 22, 4)
    step = dense_step(tokens, keys, 5)
    merged, _ = apply(step, PiToMe())
    metric = keys[0, 0, 2:] / keys[0, 0, 2:].norm(dim=-1, keepdim=True)
    similarity = metric @ metric.T
    energy = torch.nn.functional.elu(similarity - 0.9).mean(dim=-1)  # margin at block 0
    protected = energy.argsort()[: 20 - 10]  # T − 2r lowest energies
    for index in protected:
        assert (merged[0] == tokens[0, 2 + index]).all(dim=-1).sum() == 1


def test_evit_keeps_the_top_attention_tokens_and_fuses_the_rest_by_attention():
    generator = torch.Generator().manual_seed(0)
    count, r, heads = 8, 3, 2
    query = torch.randn(1, heads, 2 + count, 4, generator=generator)
    keys = torch.randn(1, heads, 2 + count, 4, generator=generator)
    tokens = torch.randn(1, 2 + count, 6, generator=generator)
    sizes = torch.randint(1, 4, (1, 2 + count, 1), generator=generator).float()
    sizes[:, :2] = 1
    merged, new_sizes = apply(dense_step(tokens, keys, r, query=query, sizes=sizes.clone()),
                              EViT())
    logits = query[0, :, :2] @ keys[0].transpose(-1, -2) / 2 + sizes[0, :, 0].log()  # √hd = 2
    attention = logits.softmax(dim=-1).mean(dim=(0, 1))[2:]  # [T], CLS and DIST over heads
    top = attention.argsort(descending=True)
    kept, fused = top[: count - r - 1].sort().values, top[count - r - 1 :]
    weights = attention[fused, None]
    expected_fused = (weights * tokens[0, 2 + fused]).sum(0) / weights.sum()
    assert merged.shape[1] == 2 + count - r
    body, body_sizes = merged[0, 2:], new_sizes[0, 2:, 0]
    for index in kept:
        assert (body == tokens[0, 2 + index]).all(dim=-1).sum() == 1
    fused_row = [i for i in range(len(body)) if not any(
        torch.equal(body[i], tokens[0, 2 + k]) for k in kept)]
    assert len(fused_row) == 1
    torch.testing.assert_close(body[fused_row[0]], expected_fused)
    assert body_sizes[fused_row[0]] == sizes[0, 2 + fused, 0].sum()
    assert torch.equal(merged[0, :2], tokens[0, :2])


def tofu_case() -> tuple[ReductionStep, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    keys = torch.randn(1, 1, 14, 8, generator=generator)
    keys[0, 0, 3::2] = keys[0, 0, 2:13:2] + 0.05  # every A token has a near-twin in B
    tokens = torch.randn(1, 14, 6, generator=generator) * torch.arange(1, 15)[None, :, None]
    return keys, tokens


@pytest.mark.parametrize("block", [0, 11])
def test_tofu_prunes_early_and_merges_by_norm_preserving_average_late(block):
    keys, tokens = tofu_case()
    sizes = torch.ones(1, 14, 1)
    sizes[0, 5] = 3.0
    merged, new_sizes = apply(dense_step(tokens, keys, 4, block, sizes=sizes.clone()), ToFu())
    matching = bipartite_soft_matching(keys[:, 0], 4, 2)
    groups = matching.merge(torch.eye(14)[None], reduce="amax")[0]  # [10, 14] members
    torch.testing.assert_close(new_sizes[0], groups @ sizes[0])
    for slot, members in enumerate(groups.bool()):
        if members.sum() == 1:  # unmatched and prefix tokens pass unchanged, bit for bit
            assert torch.equal(merged[0, slot], tokens[0, members][0])
            continue
        own = matching.keep(tokens)[0, slot]
        if block == 0:  # prune: the B token keeps its own value
            assert torch.equal(merged[0, slot], own)
            continue
        x, s = tokens[0, members], sizes[0, members]
        mean = (s * x).sum(0) / s.sum()
        torch.testing.assert_close(merged[0, slot].norm(), x.norm(dim=-1).max())
        torch.testing.assert_close(merged[0, slot], mean / mean.norm() * x.norm(dim=-1).max())
    assert ToFu().prunes(6, 12) and not ToFu().prunes(7, 12) and ToFu(switch=2).prunes(2, 12)


def test_random_is_reproducible_from_its_seed():
    fbank = torch.randn(2, 64, 128)

    def groups(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = fixed_model().set_r(8, method="random", method_options={"seed": seed})
        model.track_source = True
        with torch.no_grad():
            logits = model(fbank)
        return logits, model.last_state.source

    first, again, other = groups(3), groups(3), groups(4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    assert torch.equal(first[1][0], first[1][1])  # the draw does not depend on the row


def test_tome_method_is_the_engine_tome():
    assert isinstance(make_method("tome"), ToMe)


# --- a new method is written once for both layouts ---------------------------------------------


class JoinTheLargest:
    """A method written once, on the step's clip view and no layout branch: in every clip,
    the r mergeable tokens of smallest norm join the clip's largest-norm token."""

    name = "join-the-largest"

    def match(self, step: ReductionStep):
        view = step.clip_view()
        rank = view.rank(view.gather(step.tokens).norm(dim=-1))  # [K, T], 0 = largest norm
        joins = view.valid & (rank >= (view.counts - view.remove)[:, None])
        largest = (rank == 0).long().argmax(dim=1, keepdim=True).expand_as(rank)
        position = torch.arange(rank.shape[1]).expand_as(rank)
        return regroup(view, ~joins, torch.where(joins, largest, position))


class ToMeOnTokens:
    """ToMe's matching on the tokens instead of the keys, through `tome.bipartite_matching`."""

    name = "tome-on-tokens"

    def match(self, step: ReductionStep):
        return bipartite_matching(step, step.tokens)


NEW_METHODS = [JoinTheLargest, ToMeOnTokens]


def per_head_rows(flat: torch.Tensor, layout: Layout, heads: int) -> torch.Tensor:
    """Flat per-token keys [N, H·hd] → attention rows [R, H, L, hd]."""
    rows = layout.to_rows(flat)
    return rows.view(*rows.shape[:2], heads, -1).transpose(1, 2)


def merged_clips(method, tokens: list[torch.Tensor], keys: list[torch.Tensor], r: list[int],
                 max_tokens: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Merge clips (tokens [n, D], keys [n, 2·hd]) packed into rows of `max_tokens`: the
    tokens and sizes of every clip after one step."""
    layout = Layout.pack([len(clip) for clip in tokens], max_tokens)
    state = TokenState(layout)
    keys_rows = per_head_rows(torch.cat(keys), layout, 2)
    step = ReductionStep(torch.cat(tokens), keys_rows, keys_rows, layout, r, 0, 12, 2)
    merged = state.apply(method.match(step), step.tokens)
    counts = list(state.layout.counts)
    return list(merged.split(counts)), list(state.sizes.split(counts))


def merged_rows(method, tokens: torch.Tensor, keys: torch.Tensor,
                r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge dense rows (tokens [B, N, D], keys [B, N, 2·hd]): tokens and sizes after one step."""
    state = TokenState()
    keys_rows = keys.view(*keys.shape[:2], 2, -1).transpose(1, 2)  # [B, H, N, hd]
    step = ReductionStep(tokens, keys_rows, keys_rows, None, [r], 0, 12, 2)
    return state.apply(method.match(step), tokens), state.sizes


@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_new_method_written_once_matches_alike_dense_and_packed(method):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 14, 6, generator=generator)
    keys = torch.randn(3, 14, 8, generator=generator)
    dense, dense_sizes = merged_rows(method(), tokens, keys, 4)
    packed, packed_sizes = merged_clips(method(), list(tokens), list(keys), [4, 4, 4], 30)
    for row, clip in enumerate(packed):  # two clips share a row of 30 slots
        torch.testing.assert_close(clip, dense[row])
        torch.testing.assert_close(packed_sizes[row], dense_sizes[row])
    assert dense.shape[1] == 10 and dense_sizes.sum(dim=1).flatten().tolist() == [14] * 3


@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_new_method_merges_each_packed_clip_as_that_clip_alone(method):
    generator = torch.Generator().manual_seed(1)
    lengths, r = (12, 7, 16, 9), [3, 2, 0, 3]
    tokens = [torch.randn(n, 6, generator=generator) for n in lengths]
    keys = [torch.randn(n, 8, generator=generator) for n in lengths]
    packed, packed_sizes = merged_clips(method(), tokens, keys, r, 28)
    assert [len(clip) for clip in packed] == [n - k for n, k in zip(lengths, r, strict=True)]
    for clip in range(len(lengths)):
        alone, sizes = merged_rows(method(), tokens[clip][None], keys[clip][None], r[clip])
        torch.testing.assert_close(packed[clip], alone[0])
        torch.testing.assert_close(packed_sizes[clip], sizes[0])


@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_new_method_plugs_into_the_fixed_and_the_elastic_ast(method):
    # As test_packed_rows_reduce_as_the_fixed_ast, with a method that no module defines.
    ast, elastic = equivalent_pair(depth=2)
    ast.set_r(6).reduction, elastic.set_r(6).reduction = method(), method()
    batch = torch.randn(3, 64, 128)
    with torch.no_grad():
        expected, packed = ast(batch), elastic(list(batch))
    assert elastic.last_state.layout.num_rows < 3  # clips do share rows
    assert list(elastic.last_state.layout.counts) == [ast.last_state.sizes.shape[1]] * 3
    torch.testing.assert_close(packed, expected, atol=1e-4, rtol=0)
