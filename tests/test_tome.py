"""Token merging: schedules, counts, protected tokens, proportional attention, source tracking."""

from __future__ import annotations

import math

import pytest
import torch

from fastast_cli import build_model
from fastast_cli.models.elastic import build_elastic
from fastast_cli.models.reduction.matching import ReductionStep
from fastast_cli.models.reduction.schedule import max_merge, resolve_schedule, tokens_per_block
from fastast_cli.models.reduction.tome import ToMe, bipartite_soft_matching
from fastast_cli.models.vit import TokenState


def tiny(frames: int = 128, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("tiny", 10, target_length=frames, **kwargs).eval()


def reference_forward(model, fbank: torch.Tensor) -> torch.Tensor:
    """The plain AST written out with explicit softmax attention: no SDPA, no merging."""
    tokens = model.embed(fbank)
    for block in model.blocks:
        batch, length, dim = tokens.shape
        heads = block.attn.num_heads
        qkv = block.attn.qkv(block.norm1(tokens)).reshape(batch, length, 3, heads, dim // heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        weights = (query @ key.transpose(-1, -2) / math.sqrt(dim // heads)).softmax(-1)
        attended = (weights @ value).transpose(1, 2).reshape(batch, length, dim)
        tokens = tokens + block.attn.proj(attended)
        tokens = tokens + block.mlp(block.norm2(tokens))
    tokens = model.norm(tokens)
    return model.mlp_head((tokens[:, 0] + tokens[:, 1]) / 2)


def test_r_zero_is_the_plain_ast():
    model = tiny()
    fbank = torch.randn(3, 128, 128)
    with torch.no_grad():
        expected = reference_forward(model, fbank)
        plain = model(fbank)
        model.set_r(8)
        merged = model(fbank)
        model.set_r(0)
        again = model(fbank)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(plain, again)
    assert (merged - plain).abs().max() > 1e-4  # merging changes the result, set_r takes effect


def test_token_counts_follow_the_schedule_and_the_cap():
    model = tiny(128).set_r(15)  # Speech Commands shape: 144 patches + CLS + DIST
    counts = []
    hooks = [
        block.register_forward_hook(lambda m, i, out: counts.append(out.shape[1]))
        for block in model.blocks
    ]
    with torch.no_grad():
        model(torch.randn(2, 128, 128))
    for hook in hooks:
        hook.remove()
    # 15 per block until the cap (half of the mergeable tokens) takes over.
    expected = [131, 116, 101, 86, 71, 56, 41, 26, 14, 8, 5, 4]
    assert counts == expected
    assert tokens_per_block(146, model.r_schedule, protected=2) == expected


def test_token_counts_with_a_per_block_list():
    model = tiny(128).set_r([0, 10, 0, 20, 0, 0, 5, 0, 0, 0, 0, 1])
    with torch.no_grad():
        model(torch.randn(1, 128, 128))
    assert model.last_state.sizes.shape[1] == 146 - 36
    assert model.last_state.sizes.sum().item() == 146


@pytest.mark.parametrize("r", [1, 7, 20])
def test_decreasing_schedule_keeps_the_total(r):
    values = resolve_schedule(r, 12, "decreasing")
    assert sum(values) == 12 * r
    assert values[0] == 2 * r and values[-1] == 0
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_schedule_errors():
    with pytest.raises(ValueError, match="one value per block"):
        resolve_schedule([1, 2], 12)
    with pytest.raises(ValueError, match=">= 0"):
        resolve_schedule(-1, 12)
    with pytest.raises(ValueError, match="unknown r schedule"):
        resolve_schedule(4, 12, "sideways")


def test_cap_is_half_the_mergeable_tokens():
    assert max_merge(602, 2) == 300
    assert max_merge(3, 2) == 0
    model = tiny(32).set_r(1000)  # 12 × 2 patches + 2
    with torch.no_grad():
        model(torch.randn(1, 32, 128))
    assert model.last_state.sizes.shape[1] == 3  # CLS, DIST and one token covering all patches
    assert model.last_state.sizes[0, 2, 0].item() == 24


def test_cls_and_dist_are_never_merged_even_when_most_similar():
    # Every patch has exactly DIST's key: a matching that allowed DIST into set B would merge
    # patches into it (the FastAST code's bug). Ours excludes both prefix tokens.
    keys = torch.randn(2, 1, 8).expand(2, 21, 8).clone()
    keys[:, 0] = torch.randn(2, 8)
    tokens = torch.randn(2, 21, 16)
    state = TokenState()
    merged = state.apply(bipartite_soft_matching(keys, 9, protected=2), tokens)
    assert merged.shape == (2, 12, 16)
    assert torch.equal(merged[:, :2], tokens[:, :2])
    assert state.sizes[:, :2].eq(1).all()
    assert state.sizes.sum(1).eq(21).all()


def test_prefix_tokens_keep_size_one_through_the_model():
    model = tiny(128).set_r(30)
    model.track_source = True
    with torch.no_grad():
        model(torch.randn(2, 128, 128))
    source = model.last_state.source
    assert torch.equal(source[:, 0], torch.eye(146)[0].expand(2, -1))
    assert torch.equal(source[:, 1], torch.eye(146)[1].expand(2, -1))


def test_source_tracking_partitions_the_patches():
    model = tiny(128).set_r(12, "decreasing")
    model.track_source = True
    with torch.no_grad():
        model(torch.randn(3, 128, 128))
    state = model.last_state
    assert torch.equal(state.source.sum(dim=1), torch.ones(3, 146))  # each patch exactly once
    torch.testing.assert_close(state.source.sum(dim=-1, keepdim=True), state.sizes)


def paired_tokens(pairs: int, dim: int) -> torch.Tensor:
    """[1, 2 + 2·pairs, dim]: CLS, DIST, then each random token twice in a row."""
    torch.manual_seed(1)
    distinct = torch.randn(1, pairs, dim)
    twins = distinct.repeat_interleave(2, dim=1)
    return torch.cat([torch.randn(1, 2, dim), twins], dim=1)


@pytest.mark.parametrize("proportional", [True, False])
def test_merging_identical_pairs_is_exact_with_proportional_attention(proportional):
    model = tiny(32)
    pairs = 40
    tokens = paired_tokens(pairs, model.config.embed_dim)
    with torch.no_grad():
        plain = model.set_r(0).forward_blocks(tokens)
        schedule = [pairs] + [0] * (model.config.depth - 1)
        model.set_r(schedule, proportional_attention=proportional)
        merged = model.forward_blocks(tokens)
    assert merged.shape[1] == 2 + pairs
    assert model.last_state.sizes[0, 2:].eq(2).all()  # every twin found its twin
    difference = (merged[:, :2] - plain[:, :2]).abs().max().item()
    if proportional:
        assert difference < 1e-5
    else:  # without log(size) the merged keys lose half their weight: not exact
        assert difference > 1e-3


def test_models_without_qkv_bias_build_and_run():
    model = build_model("tiny", 3, target_length=32, qkv_bias=False).eval()
    assert model.blocks[0].attn.qkv.bias is None
    with torch.no_grad():
        assert model(torch.randn(1, 32, 128)).shape == (1, 3)


def test_merging_runs_under_mixed_precision():
    """The autocast path GPUs take (fp16 there; bf16 here, as the CPU's autocast dtype):
    masks, log(sizes) and merges must keep working in reduced precision."""
    model = tiny(128).set_r(10)
    fbank = torch.randn(2, 128, 128)
    with torch.no_grad():
        full = model(fbank)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = model(fbank)
    assert reduced.dtype == torch.bfloat16
    assert model.last_state.sizes.shape[1] == 146 - 120
    torch.testing.assert_close(reduced.float(), full, atol=0.15, rtol=0.1)


def test_unmerged_tokens_keep_their_position_order():
    # 2 protected + 10 mergeable tokens; A = positions 2, 4, ..., 10. The A tokens' best edges
    # grow towards the back (A0 weakest ... A4 strongest), so r = 2 merges A4 and A3, and by
    # score the unmerged A tokens would come out as A2, A1, A0 (descending position order);
    # ToMe puts them back in position order: A0, A1, A2.
    torch.manual_seed(0)
    keys = torch.randn(1, 12, 8)
    for i, position in enumerate(range(2, 12, 2)):  # A token i almost equals its B neighbour
        keys[0, position] = keys[0, position + 1] + 0.05 * (5 - i) * torch.randn(8)
    matching = bipartite_soft_matching(keys, 2, protected=2)
    positions = torch.arange(12.0)[None, :, None]
    after = matching.merge(positions, reduce="amax")[0, :, 0]  # source position of each token
    assert after[:2].tolist() == [0.0, 1.0]
    assert after[2:5].tolist() == [2.0, 4.0, 6.0]  # unmerged A tokens, in position order
    assert after[5:].tolist() == [3.0, 5.0, 7.0, 9.0, 11.0]  # B (A3 into 9, A4 into 11)


def test_unmerged_tokens_keep_their_position_order_for_any_keys():
    torch.manual_seed(3)
    keys = torch.randn(16, 40, 8)  # 16 random sets of 2 protected + 38 mergeable tokens
    positions = torch.arange(40.0)[None, :, None].expand(16, -1, -1)
    for r in (1, 5, 12):
        after = bipartite_soft_matching(keys, r, protected=2).merge(positions, reduce="amax")
        unmerged_a = after[:, 2 : 2 + 19 - r, 0]
        assert torch.all(unmerged_a[:, 1:] > unmerged_a[:, :-1]), r
        assert torch.all(unmerged_a % 2 == 0)  # A tokens only



class RecordingToMe(ToMe):
    """A reduction method plugged in from outside: ToMe, recording what each block showed it."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bool, tuple[int, ...], list[int]]] = []

    def match(self, step: ReductionStep):
        packed = step.layout is not None
        self.seen.append((step.block, step.depth, packed, tuple(step.query.shape),
                          list(step.clip_r)))
        assert step.query.shape == step.key.shape  # per head: [R, H, L, hd]
        return super().match(step)


def test_a_method_plugs_into_both_layouts_through_one_interface():
    torch.manual_seed(0)
    fixed = build_model("tiny", 4, target_length=48, depth=3).eval().set_r(6)
    elastic = build_elastic("tiny", 4, target_length=128, depth=3, max_tokens=60).eval().set_r(5)
    fbank, clips = torch.randn(2, 48, 128), [torch.randn(t, 128) for t in (48, 16, 32)]
    with torch.no_grad():
        expected = fixed(fbank), elastic(clips)
        fixed.reduction, elastic.reduction = RecordingToMe(), RecordingToMe()
        torch.testing.assert_close(fixed(fbank), expected[0], atol=0, rtol=0)
        torch.testing.assert_close(elastic(clips), expected[1], atol=0, rtol=0)
    # fixed: 2 + 12·4 = 50 tokens → 44 → 38 → 32; every row loses the same r
    assert fixed.reduction.seen == [(0, 3, False, (2, 3, 50, 64), [6]),
                                    (1, 3, False, (2, 3, 44, 64), [6]),
                                    (2, 3, False, (2, 3, 38, 64), [6])]
    # packed: clips of 26, 10 and 18 tokens; the 10-token clip is capped at half its 8 patches
    blocks = [(block, depth, packed) for block, depth, packed, _, _ in elastic.reduction.seen]
    assert blocks == [(0, 3, True), (1, 3, True), (2, 3, True)]
    assert [r for *_, r in elastic.reduction.seen] == [[5, 4, 5], [5, 2, 5], [5, 1, 3]]


def test_one_cap_decides_what_a_packed_plan_may_merge():
    # A plan asking more than a clip can give is capped in the block, as the fixed AST caps it.
    torch.manual_seed(0)
    model = build_elastic("tiny", 4, target_length=128, depth=2).eval()
    clips = [torch.randn(48, 128), torch.randn(16, 128)]  # 26 and 10 tokens
    layout = model.pack(clips)
    with torch.no_grad():
        tokens, after = model.forward_blocks(model.embed(clips), layout, [[50, 50], [50, 50]])
    capped = [tokens_per_block(count, [50, 50], 2)[-1] for count in (26, 10)]
    assert list(after.counts) == capped == [8, 4]
    assert tokens.shape[0] == 12
