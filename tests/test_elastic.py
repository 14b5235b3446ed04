"""ElasticAST: packing, block-diagonal attention, merging in packed rows, positions, features."""

from __future__ import annotations

import math

import pytest
import torch

from fastast_cli import build_model
from fastast_cli.data.elastic_features import (
    collate_native,
    draw_resolution,
    elastic_features,
    shift_for_resolution,
)
from fastast_cli.data.features import LengthPolicy, fbank, num_frames
from fastast_cli.models.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from fastast_cli.models.elastic import ElasticAST, build_elastic
from fastast_cli.models.pos_embed import (
    factorize_grid,
    join_pos_embed,
    resample_table,
    split_pos_embed,
)
from fastast_cli.models.reduction.layout import Layout, block_diagonal_bias, first_fit_decreasing
from fastast_cli.models.reduction.schedule import max_merge, tokens_per_block
from fastast_cli.models.reduction.tome import bipartite_soft_matching, packed_bipartite_matching
from fastast_cli.models.vit import TokenState

# Frames of the test clips: 50, 130, 18, 162, 10 and 34 tokens (CLS + DIST + 8 × frames // 16).
FRAMES = (100, 256, 37, 320, 16, 70)
DEPTH = 4  # enough blocks for merging to compound, few enough for a fast test


def tiny(**kwargs) -> ElasticAST:
    torch.manual_seed(0)
    return build_elastic("tiny", 10, target_length=512, depth=DEPTH, **kwargs).eval()


def make_clips(frames=FRAMES, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(t, 128, generator=generator) for t in frames]


def tokens_per_clip_per_block(model: ElasticAST, clips) -> list[list[torch.Tensor]]:
    """The output of every block, split per clip: [depth][num_clips] tensors [n, D]."""
    captured = []

    def keep(block, args, out):  # args[1] is the TokenState, already holding the new layout
        captured.append(list(out.split(list(args[1].layout.counts))))

    hooks = [block.register_forward_hook(keep) for block in model.blocks]
    with torch.no_grad():
        model(clips)
    for hook in hooks:
        hook.remove()
    return captured


@pytest.mark.parametrize("r", [0, 4, 0.1])
def test_packed_rows_give_each_clip_its_logits_alone(r):
    model = tiny(max_tokens=200).set_r(r)
    clips = make_clips()
    layout = model.pack(clips)
    assert layout.num_rows < len(clips)  # clips share rows ...
    assert max(layout.rows.count(row) for row in set(layout.rows)) >= 3
    assert (layout.segment == -1).any()  # ... and some row holds padding
    with torch.no_grad():
        packed = model(clips)
        alone = torch.cat([model([clip]) for clip in clips])
    assert packed.shape == (len(clips), 10)
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=0)


@pytest.mark.parametrize("proportional", [True, False])
def test_every_packing_gives_the_same_logits(proportional):
    model = tiny().set_r(6, proportional_attention=proportional)
    clips = make_clips()
    counts = [model.num_tokens(clip) for clip in clips]
    with torch.no_grad():
        one_row = model(clips, Layout.pack(counts, 2048))
        padded = model(clips, Layout.one_per_row(counts))
        tight = model(clips, Layout.pack(counts, 162))
    torch.testing.assert_close(one_row, padded, atol=1e-4, rtol=0)
    torch.testing.assert_close(tight, padded, atol=1e-4, rtol=0)


@pytest.mark.parametrize("r", [0, 8, 40])
def test_equals_the_fixed_ast_with_merging(r):
    # A fixed AST with non-overlapping patches and an additive positional grid is exactly what an
    # ElasticAST made from it computes, merging included: same A/B split, same edges, same order.
    torch.manual_seed(0)
    ast = build_model("tiny", 10, target_length=256, fstride=16, tstride=16, depth=DEPTH).eval()
    prefix, _ = split_pos_embed(ast.pos_embed.data, ast.config.grid)
    f_dim, t_dim = ast.config.grid
    additive = torch.randn(1, 192, f_dim, 1) + torch.randn(1, 192, 1, t_dim)
    ast.pos_embed.data = join_pos_embed(prefix, additive)
    model = ElasticAST.from_ast(ast, target_length=512).eval()
    batch = torch.randn(3, 256, 128)
    with torch.no_grad():
        expected = ast.set_r(r)(batch)
        packed = model.set_r(r)(list(batch))
    torch.testing.assert_close(packed, expected, atol=1e-4, rtol=0)
    final = tokens_per_block(2 + f_dim * t_dim, ast.r_schedule, protected=2)[-1]
    assert model.last_state.layout.counts == (final,) * 3


def test_from_ast_copies_every_weight():
    torch.manual_seed(0)
    labels = [str(i) for i in range(7)]
    ast = build_model("tiny", 7, target_length=128, depth=DEPTH, labels=labels)
    ast.meta = {"mean": -4.2, "std": 4.5}
    model = ElasticAST.from_ast(ast)
    for name, value in model.state_dict().items():
        if name in ast.state_dict():
            assert torch.equal(value, ast.state_dict()[name]), name
    assert model.labels == ast.labels and model.meta == ast.meta
    assert model.config.fstride == model.config.tstride == 16


def test_checkpoint_round_trip(tmp_path):
    model = tiny(max_tokens=200).set_r(3)
    save_checkpoint(tmp_path / "elastic.pt", model, mean=-4.2, std=4.5)
    payload = read_checkpoint(tmp_path / "elastic.pt")
    assert payload["architecture"] == "elastic"
    again = load_checkpoint(tmp_path / "elastic.pt").set_r(3)
    clips = make_clips()
    with torch.no_grad():
        assert torch.equal(model(clips), again(clips))
    assert again.config == model.config and again.meta == {"mean": -4.2, "std": 4.5}


@pytest.mark.parametrize("r", [0, 5])
def test_a_clip_does_not_see_the_other_clips_of_its_row(r):
    model = tiny().set_r(r)
    clips = make_clips()
    same_length = make_clips(seed=2)[1]  # different audio, same length: same layout
    other_length = torch.randn(400, 128)  # different length: every offset in the row moves
    before = tokens_per_clip_per_block(model, clips)
    after_same = tokens_per_clip_per_block(model, [clips[0], same_length, *clips[2:]])
    after_other = tokens_per_clip_per_block(model, [clips[0], other_length, *clips[2:]])
    assert model.pack(clips).num_rows == 1
    for block in range(model.config.depth):
        for clip in [0, 2, 3, 4, 5]:
            assert torch.equal(before[block][clip], after_same[block][clip])
            torch.testing.assert_close(
                before[block][clip], after_other[block][clip], atol=1e-5, rtol=0
            )
        assert not torch.allclose(before[block][1], after_same[block][1])


@pytest.mark.parametrize("r", [3, 30, 0.08, [0, 10, 20, 5]])
def test_token_counts_per_clip_per_block_follow_r(r):
    model = tiny(max_tokens=200).set_r(r)
    clips = make_clips()
    counts = [[len(t) for t in per_clip] for per_clip in tokens_per_clip_per_block(model, clips)]
    for clip, features in enumerate(clips):
        start = model.num_tokens(features)
        got = [block[clip] for block in counts]
        if isinstance(r, float):
            asked = [round(r * (start - 2))] * model.config.depth
        else:
            asked = [r] * model.config.depth if isinstance(r, int) else r
        assert got == tokens_per_block(start, asked, protected=2)
        for before, after, wanted in zip([start, *got], got, asked, strict=False):
            assert before - after == min(wanted, max_merge(before, 2))


def test_a_merge_plan_sets_r_per_clip():
    model = tiny(max_tokens=200)
    clips = make_clips()
    per_clip = [3, 9, 0, 12, 1, 2]
    with torch.no_grad():
        tokens, layout = model.forward_blocks(
            model.embed(clips), model.pack(clips), [per_clip] * DEPTH
        )
        packed = model.mlp_head(model.pool(tokens, layout))
        alone = torch.cat([model.set_r(r)([clip]) for clip, r in zip(clips, per_clip, strict=True)])
    expected = [model.num_tokens(clip) - DEPTH * r for clip, r in zip(clips, per_clip, strict=True)]
    assert list(layout.counts) == expected
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=0)


def test_sizes_stay_inside_each_clip():
    model = tiny(max_tokens=200).set_r(0.2)
    clips = make_clips()
    with torch.no_grad():
        model(clips)
    state = model.last_state
    per_clip = state.sizes[:, 0].split(list(state.layout.counts))
    patches = [model.num_tokens(clip) - 2 for clip in clips]
    assert [float(sizes[2:].sum()) for sizes in per_clip] == patches
    assert all(sizes[:2].eq(1).all() for sizes in per_clip)  # CLS and DIST never merge


def test_merging_never_crosses_clips_or_touches_padding():
    # Row 0 holds clips 0 and 1, row 1 clip 2 and padding. Every key of clip 1 equals clip 0's
    # first A key: a matching across clips would pair them with similarity 1. Clip 2's A and B
    # keys point in opposite directions (similarity -1), so the zero padding slots of its row
    # (similarity 0) would win if they were candidates. Ours only merges inside each clip.
    layout = Layout((12, 9, 7), (0, 0, 1))
    torch.manual_seed(0)
    keys = torch.randn(28, 4)
    keys[12:21] = keys[2]
    direction = torch.randn(4)
    keys[[23, 25, 27]], keys[[24, 26]] = direction, -direction
    matching = packed_bipartite_matching(keys, layout, [5, 3, 2], protected=2)
    assert matching.layout.counts == (7, 6, 5)
    bounds = [0, 7, 13, 18]  # each clip's slots after merging
    for clip, (start, stop) in enumerate(zip([0, 12, 21], [12, 21, 28], strict=True)):
        kept = matching.stay[bounds[clip] : bounds[clip + 1]]
        assert kept.min() >= start and kept.max() < stop
        assert torch.equal(kept[:2], torch.arange(2) + start)  # CLS and DIST stay in front
        from_clip = (matching.merged >= start) & (matching.merged < stop)
        into = matching.into[from_clip]
        assert into.min() >= bounds[clip] + 2 and into.max() < bounds[clip + 1]
    assert len(matching.merged) == 10
    sizes = matching.merge(torch.ones(28, 1))
    assert sizes[:7].sum() == 12 and sizes[7:13].sum() == 9 and sizes[13:].sum() == 7


def test_one_clip_is_merged_exactly_as_tome_merges_it():
    torch.manual_seed(0)
    keys, tokens = torch.randn(1, 41, 8), torch.randn(1, 41, 16)
    state = TokenState()
    expected = state.apply(bipartite_soft_matching(keys, 12, protected=2), tokens)
    packed_state = TokenState(Layout((41,), (0,)))
    matching = packed_bipartite_matching(keys[0], packed_state.layout, [12], protected=2)
    merged = packed_state.apply(matching, tokens[0])
    torch.testing.assert_close(merged, expected[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(packed_state.sizes, state.sizes[0])


def test_block_diagonal_bias():
    layout = Layout((3, 2, 4), (0, 0, 1))  # row 0: clips 0, 1; row 1: clip 2 + 1 padding
    sizes = torch.tensor([1.0, 1, 2, 1, 3, 1, 1, 1, 4])[:, None]
    bias = block_diagonal_bias(layout, sizes.log(), torch.float32)[:, 0]  # [2, 5, 5]
    allowed = torch.isfinite(bias)
    assert torch.equal(allowed[0], torch.block_diag(torch.ones(3, 3), torch.ones(2, 2)).bool())
    assert torch.equal(allowed[1], torch.block_diag(torch.ones(4, 4), torch.ones(1, 1)).bool())
    assert bias[0, 0, 2] == math.log(2) and bias[1, 0, 3] == math.log(4)
    dense = Layout((3, 3), (0, 1))
    assert block_diagonal_bias(dense, None, torch.float32) is None
    assert block_diagonal_bias(dense, torch.zeros(6, 1), torch.float32).shape == (2, 1, 1, 3)


def test_gradients_are_finite_and_stay_inside_each_clip():
    model = tiny(max_tokens=200).set_r(0.1).train()
    clips = [clip.requires_grad_() for clip in make_clips()]
    model(clips)[3].sum().backward()  # clip 3 shares its row with clip 5 and padding
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert clips[3].grad.abs().sum() > 0
    assert all(torch.count_nonzero(clips[i].grad) == 0 for i in (0, 1, 2, 4, 5))


def test_first_fit_decreasing():
    counts = [50, 130, 18, 258, 10, 34, 300]
    rows = first_fit_decreasing(counts, 300)
    for row in set(rows):
        assert sum(n for n, j in zip(counts, rows, strict=True) if j == row) <= 300
    assert rows[6] == 0 and len(set(rows)) == 3
    with pytest.raises(ValueError, match="more than max_tokens=200"):
        first_fit_decreasing(counts, 200)


def test_positions_are_the_best_additive_fit_of_a_grid():
    freq, time = torch.randn(12, 6), torch.randn(101, 6)
    grid = (freq[:, None, :] + time[None, :, :]).permute(2, 0, 1)[None]  # [1, D, 12, 101]
    got_freq, got_time = factorize_grid(grid)
    torch.testing.assert_close(got_freq[:, None] + got_time[None], freq[:, None] + time[None])
    # A 10/10 AST grid read at stride 16: patch i starts at frame 16·i = source position 1.6·i.
    table = torch.arange(12.0)[:, None]
    assert resample_table(table, 8, 1.6)[:, 0].tolist() == pytest.approx(
        [0, 1.6, 3.2, 4.8, 6.4, 8.0, 9.6, 11.0]  # the last one past the end: edge value
    )
    assert resample_table(torch.randn(24, 3), 8, None).shape == (8, 3)  # DeiT: center cut


def test_clip_errors_and_fractional_r():
    model = tiny()
    with pytest.raises(ValueError, match="takes 16 to 512 frames"):
        model([torch.randn(600, 128)])
    with pytest.raises(ValueError, match="takes 16 to 512 frames"):
        model([torch.randn(15, 128)])
    with pytest.raises(ValueError, match="fbank"):
        model([torch.randn(100, 64)])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        model.set_r(1.5)
    with pytest.raises(ValueError, match="non-overlapping"):
        build_elastic("tiny", 10, tstride=10)


def test_resolution_scales_the_frames():
    torch.manual_seed(0)
    wave = torch.randn(16000 * 3)
    assert torch.equal(fbank(wave, frame_shift_ms=shift_for_resolution(1)), fbank(wave))
    assert fbank(wave, frame_shift_ms=shift_for_resolution(2)).shape[0] == num_frames(
        48000, frame_shift_ms=20.0)
    for q in (1, 2, 2.5, 4):
        features = elastic_features(wave, 16000, mean=-4.0, std=4.0, resolution=q)
        assert features.shape == (num_frames(len(wave), frame_shift_ms=10.0 * q), 128)
    assert num_frames(48000, frame_shift_ms=shift_for_resolution(1)) == num_frames(48000) == 298
    assert num_frames(48000, frame_shift_ms=shift_for_resolution(2)) == 149
    short = elastic_features(wave[:800], 16000, mean=0.0, std=0.5)
    assert short.shape == (16, 128)  # padded to one patch
    assert LengthPolicy.native(1024).fit(torch.zeros(2000, 128)).shape == (1024, 128)
    assert all(1.0 <= draw_resolution(1, 4) <= 4.0 for _ in range(20))


def test_model_serves_every_resolution():
    model = tiny().set_r(0.05)
    wave = torch.randn(16000 * 5)
    clips = [elastic_features(wave, 16000, mean=-4, std=4, resolution=q) for q in (1, 2, 4)]
    layout = model.pack(clips)
    assert [n - 2 for n in layout.counts] == [8 * 31, 8 * 15, 8 * 7]
    with torch.no_grad():
        assert model(clips).shape == (3, 10)


def test_collate_native():
    batch = [(torch.zeros(30, 128), torch.tensor([1.0, 0])), (torch.zeros(50, 128), torch.ones(2))]
    fbanks, targets = collate_native(batch)
    assert [len(f) for f in fbanks] == [30, 50] and targets.shape == (2, 2)


def test_packed_unmerged_tokens_keep_their_position_order():
    # Three clips in two rows; in each clip the unmerged A tokens (slots 2 … 2 + Na - r) must
    # come from increasing positions, as in ToMe, whatever their edge scores.
    layout = Layout((14, 11, 9), (0, 0, 1))
    torch.manual_seed(1)
    keys = torch.randn(34, 8)
    r = [3, 2, 1]
    matching = packed_bipartite_matching(keys, layout, r, protected=2)
    starts, after = [0, 14, 25], [0, 11, 20, 28]
    for clip, count in enumerate(layout.counts):
        num_a = (count - 2 + 1) // 2
        kept = matching.stay[after[clip] + 2 : after[clip] + 2 + num_a - r[clip]] - starts[clip]
        assert torch.all(kept[1:] > kept[:-1]), kept
        assert torch.all((kept - 2) % 2 == 0)  # A tokens only


def test_packed_merging_matches_tome_over_several_blocks():
    # Two merges in a row: the second split depends on the order the first one left.
    torch.manual_seed(2)
    keys1, keys2 = torch.randn(1, 30, 8), torch.randn(1, 22, 8)
    tokens = torch.randn(1, 30, 16)
    state = TokenState()
    expected = state.apply(bipartite_soft_matching(keys1, 8, protected=2), tokens)
    expected = state.apply(bipartite_soft_matching(keys2, 6, protected=2), expected)
    packed = TokenState(Layout((30,), (0,)))
    merged = packed.apply(packed_bipartite_matching(keys1[0], packed.layout, [8], 2), tokens[0])
    merged = packed.apply(packed_bipartite_matching(keys2[0], packed.layout, [6], 2), merged)
    torch.testing.assert_close(merged, expected[0], atol=1e-6, rtol=0)
