"""ElasticAST as published (Feng et al. 2024 and its released code), the default of new
`--elastic` runs: masked attention pooling with a learned query per clip, position tables that
are the grid's marginal means, token dropout keeping exactly int(n·0.9) patches per clip. The
earlier choices stay options, and checkpoints written before the choices existed load with
them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fastast_cli import build_model
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.models.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from fastast_cli.models.elastic import PUBLISHED, ElasticAST, build_elastic
from fastast_cli.models.pos_embed import factorize_grid, resample_table
from fastast_cli.models.reduction.schedule import NUM_PREFIX_TOKENS
from fastast_cli.training.config import LEGACY_ELASTIC, TrainConfig, load_config
from fastast_cli.training.resume import check_resumable
from fastast_cli.training.setup import run_model

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = (100, 256, 37, 320, 16, 70)  # 50, 130, 18, 162, 10 and 34 tokens
OLD_ELASTIC = Path(__file__).parent / "fixtures" / "old_format" / "elastic" / "best.pt"


def attention_model(**kwargs) -> ElasticAST:
    torch.manual_seed(0)
    return build_elastic("tiny", 10, target_length=512, depth=2, pooling="attention",
                         **kwargs).eval()


def make_clips(frames=FRAMES, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(t, 128, generator=generator) for t in frames]


def reference_pool(model: ElasticAST, tokens: torch.Tensor) -> torch.Tensor:
    """Attention pooling of one clip's tokens [n, D], written out: the learned query's
    projection against the normed tokens' keys, softmax over the clip, values, projection."""
    pool, heads = model.attn_pool, model.config.num_heads
    normed = model.norm(tokens)
    dim = normed.shape[-1]
    query = pool.q(pool.query).reshape(heads, 1, dim // heads)  # [H, 1, hd]
    key, value = pool.kv(normed).reshape(-1, 2, heads, dim // heads).permute(1, 2, 0, 3)
    weights = (query @ key.transpose(1, 2) / math.sqrt(dim // heads)).softmax(-1)  # [H, 1, n]
    return pool.proj((weights @ value).reshape(dim))


def test_attention_pooling_matches_its_definition_and_sees_only_its_clip():
    model = attention_model(max_tokens=200)  # several clips per row, several rows
    clips = make_clips()
    with torch.no_grad():
        layout = model.pack(clips)
        assert layout.num_rows > 1 and layout.num_clips > layout.num_rows  # clips share rows
        tokens, state = model.run_packed(model.embed(clips), layout)
        pooled = model.pool(tokens, state.layout)
        for clip, start, count in zip(range(len(clips)), state.layout.starts.tolist(),
                                      state.layout.counts, strict=True):
            expected = reference_pool(model, tokens[start:start + count])
            torch.testing.assert_close(pooled[clip], expected, atol=1e-5, rtol=0)
        packed = model(clips)
        alone = torch.cat([model([clip]) for clip in clips])
        model.max_tokens = 2048  # every clip in one row
        one_row = model(clips)
        model.max_tokens = 200
        changed = model([clips[0], torch.randn(256, 128), *clips[2:]])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(one_row, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(changed[[0, 2, 3, 4, 5]], alone[[0, 2, 3, 4, 5]], atol=1e-5,
                               rtol=0)  # another clip of the batch changes nothing
    assert not torch.allclose(changed[1], alone[1])
    legacy = build_elastic("tiny", 10, target_length=512, depth=2).eval()
    legacy.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(legacy(clips), packed)  # not (CLS + DIST) / 2


def test_attention_pooling_under_merging_stays_per_clip():
    model = attention_model(max_tokens=400).set_r(0.2)
    clips = make_clips()
    with torch.no_grad():
        packed = model(clips)
        alone = torch.cat([model([clip]) for clip in clips])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)


def test_exact_token_dropout_keeps_int_n_times_0_9_patches_per_clip():
    model = attention_model(token_dropout_mode="exact").train()
    model.token_dropout = 0.1
    clips = make_clips()
    counts = [model.num_tokens(clip) for clip in clips]
    tokens = model.embed(clips)
    wanted = [NUM_PREFIX_TOKENS + max(1, int((n - NUM_PREFIX_TOKENS) * 0.9)) for n in counts]
    draws = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        kept, kept_counts = model.drop_tokens(tokens, counts)
        assert kept_counts == wanted  # e.g. 160 patches → 144, 8 patches → 7
        for clip_kept, start, count in zip(kept.split(kept_counts), [0, *torch.tensor(
                counts).cumsum(0).tolist()[:-1]], counts, strict=True):
            torch.testing.assert_close(clip_kept[:2], tokens[start:start + 2])  # CLS, DIST
            original = tokens[start + 2:start + count]
            chosen = [int((original == row).all(1).nonzero()) for row in clip_kept[2:]]
            assert chosen == sorted(chosen)  # the clip's own patches, in order
        draws.append(kept)
    assert not torch.equal(draws[0], draws[1])  # a random subset each time
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[1].layout.counts))
    model(clips)
    assert list(seen[0]) == wanted


def test_marginal_position_tables_have_no_grand_mean_subtracted():
    grid = torch.randn(1, 6, 12, 101)
    freq, time = factorize_grid(grid, centered=False)
    torch.testing.assert_close(freq, grid.mean(dim=3)[0].T)
    torch.testing.assert_close(time, grid.mean(dim=2)[0].T)
    torch.manual_seed(0)
    ast = build_model("tiny", 10, target_length=200, depth=2)
    marginal = ElasticAST.from_ast(ast, target_length=200, **PUBLISHED)
    additive = ElasticAST.from_ast(ast, target_length=200)
    torch.testing.assert_close(marginal.freq_pos_embed, additive.freq_pos_embed)
    grand_mean = ast.pos_embed[0, 2:].mean(0).detach()
    torch.testing.assert_close(marginal.time_pos_embed - additive.time_pos_embed,
                               grand_mean.expand_as(marginal.time_pos_embed[0])[None],
                               atol=1e-6, rtol=0)
    step = 16 / 10  # the 10/10 grid read at stride 16
    expected_time = resample_table(ast.pos_embed[0, 2:].detach().reshape(
        ast.config.grid[0], ast.config.grid[1], -1).mean(0), marginal.time_pos_embed.shape[1],
        step)
    torch.testing.assert_close(marginal.time_pos_embed[0], expected_time, atol=1e-6, rtol=0)


def test_from_ast_initializes_the_pool_from_the_blocks_attention():
    torch.manual_seed(0)
    ast = build_model("tiny", 10, target_length=200, depth=2)
    model = ElasticAST.from_ast(ast, target_length=200, **PUBLISHED)
    dim = ast.config.embed_dim
    qkv = torch.stack([block.attn.qkv.weight for block in ast.blocks]).mean(0)
    torch.testing.assert_close(model.attn_pool.q.weight, qkv[:dim])
    torch.testing.assert_close(model.attn_pool.kv.weight, qkv[dim:])
    torch.testing.assert_close(model.attn_pool.proj.bias,
                               torch.stack([b.attn.proj.bias for b in ast.blocks]).mean(0))


def test_new_elastic_runs_are_elasticast_as_published(small_demo, tmp_path):
    config = load_config("demo", {"elastic": True, "data": str(small_demo),
                                  "out": str(tmp_path), "max_tokens": 512})
    assert config.elastic_choices() == PUBLISHED
    model = run_model(config, load_manifest(small_demo), lambda message: None)
    assert (model.config.pooling, model.config.position_fit,
            model.config.token_dropout_mode) == ("attention", "marginal", "exact")
    path = save_checkpoint(tmp_path / "m.pt", model)
    assert {key: read_checkpoint(path)["config"][key] for key in PUBLISHED} == PUBLISHED
    loaded = load_checkpoint(path)
    clips = make_clips((100, 37))
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), model.eval()(clips))
    legacy = load_config("demo", {"elastic": True, "data": str(small_demo), "out": str(tmp_path),
                                  "elastic_pooling": "cls-dist", "position_fit": "additive",
                                  "token_dropout_mode": "bernoulli"})
    assert not hasattr(run_model(legacy, load_manifest(small_demo), print), "attn_pool")
    with pytest.raises(FastASTError, match="elastic_pooling must be one of attention, cls-dist"):
        load_config("demo", {"elastic": True, "elastic_pooling": "mean", "out": str(tmp_path)})


def test_old_elastic_checkpoints_keep_the_earlier_choices():
    assert "pooling" not in read_checkpoint(OLD_ELASTIC)["config"]
    model = load_checkpoint(OLD_ELASTIC)
    assert (model.config.pooling, model.config.position_fit,
            model.config.token_dropout_mode) == ("cls-dist", "additive", "bernoulli")
    assert not hasattr(model, "attn_pool")


def test_an_elastic_run_from_before_the_choices_resumes_with_them():
    saved = {key: value for key, value in vars(TrainConfig(elastic=True)).items()
             if key not in LEGACY_ELASTIC}
    current = vars(TrainConfig(elastic=True))
    with pytest.raises(FastASTError, match="--elastic-pooling cls-dist --position-fit additive "
                                           "--token-dropout-mode bernoulli"):
        check_resumable(Path("last.pt"), saved, current, 0)
    check_resumable(Path("last.pt"), saved, {**current, "elastic_pooling": "cls-dist",
                                             "position_fit": "additive",
                                             "token_dropout_mode": "bernoulli"}, 0)
    fixed = {key: value for key, value in saved.items() if key != "elastic"}
    check_resumable(Path("last.pt"), {**fixed, "elastic": False}, {**current, "elastic": False},
                    0)


def test_resuming_an_elastic_run_from_before_the_choices_takes_its_choices(tmp_path):
    from fastast_cli.training.resume import with_run_choices

    (tmp_path / "config.yaml").write_text((OLD_ELASTIC.parent / "config.yaml").read_text())
    config = TrainConfig(elastic=True)
    assert with_run_choices(config, tmp_path).elastic_choices() == {
        "pooling": "cls-dist", "position_fit": "additive", "token_dropout_mode": "bernoulli"}
    asked = TrainConfig(elastic=True, position_fit="additive", elastic_pooling="cls-dist")
    assert with_run_choices(asked, tmp_path).token_dropout_mode == "bernoulli"
    (tmp_path / "config.yaml").write_text("elastic: true\nelastic_pooling: attention\n"
                                          "position_fit: marginal\ntoken_dropout_mode: exact\n")
    assert with_run_choices(config, tmp_path).elastic_choices() == PUBLISHED
