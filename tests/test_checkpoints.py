"""Checkpoint loading: every format gives the reference's logits; bad files give one clear error."""

import json
import os
import pickle
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file

from fastast_cli import load_model
from fastast_cli.data.features import AST_NORM_STATS
from fastast_cli.errors import CheckpointError
from fastast_cli.models import (
    build_elastic,
    build_model,
    init_from_pretrained,
    read_checkpoint,
    save_checkpoint,
)
from fastast_cli.models.checkpoints import load_checkpoint, loading
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.pos_embed import resample_pos_embed
from fastast_cli.models.teachers import CNNClassifier, CNNConfig

LABELS = ["dog", "rain", "siren", "speech", "bell"]
# Deliberately not the defaults: strides 12/8, 100 frames × 64 mel bins → a 5 × 11 patch grid.
HF_SMALL = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_length=100,
    num_mel_bins=64,
    frequency_stride=12,
    time_stride=8,
)
# Original AST shape (128 mel bins, strides 10/10, eps 1e-6) at tiny width: 128 frames → 12 × 12.
HF_ORIGINAL_LIKE = dict(
    hidden_size=192,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=768,
    max_length=128,
    num_mel_bins=128,
    frequency_stride=10,
    time_stride=10,
    layer_norm_eps=1e-6,
)


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter (tokens and pos_embed start at zero in transformers) with noise."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module.eval()


def hf_reference(seed: int = 0, **config) -> transformers.ASTForAudioClassification:
    hf_config = transformers.ASTConfig(**config)
    return randomize_(transformers.ASTForAudioClassification(hf_config), seed)


def random_fbank(frames: int, mel_bins: int, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, frames, mel_bins, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits_of(model, fbank: torch.Tensor) -> torch.Tensor:
    out = model(fbank)
    return out.logits if hasattr(out, "logits") else out


@pytest.fixture(scope="module")
def hf_model():
    id2label = dict(enumerate(LABELS))
    return hf_reference(num_labels=len(LABELS), id2label=id2label, **HF_SMALL)


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    model = randomize_(build_model("tiny", 5, depth=2, target_length=128), seed=3)
    return save_checkpoint(tmp_path / "tiny.pt", model)


# --- Hugging Face folders --------------------------------------------------------------------


def assert_matches_hf(folder: Path, hf_model) -> None:
    fbank = random_fbank(100, 64)
    model = load_model(folder)
    expected = logits_of(hf_model, fbank)
    torch.testing.assert_close(logits_of(model, fbank), expected, rtol=0, atol=1e-4)
    config = model.config
    assert (config.fstride, config.tstride) == (12, 8)
    assert (config.target_length, config.num_mel_bins) == (100, 64)
    assert (config.embed_dim, config.depth, config.num_heads, config.mlp_ratio) == (64, 2, 4, 2.0)
    assert config.layer_norm_eps == 1e-12
    assert model.labels == LABELS
    assert not model.training


def test_hf_safetensors_folder_gives_transformers_logits(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert_matches_hf(tmp_path, hf_model)


def test_hf_pytorch_bin_folder_gives_transformers_logits(tmp_path, hf_model):
    # transformers 5 writes safetensors even with safe_serialization=False; write the
    # pytorch_model.bin that transformers 4 wrote (same on-disk names) ourselves.
    hf_model.save_pretrained(tmp_path)
    disk_names = load_file(tmp_path / "model.safetensors")
    torch.save(disk_names, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    assert any(".attention.attention.query." in name for name in disk_names)
    assert_matches_hf(tmp_path, hf_model)


def test_hf_in_memory_names_give_transformers_logits(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path)
    in_memory = {name: t.contiguous() for name, t in hf_model.state_dict().items()}
    save_file(in_memory, tmp_path / "model.safetensors")
    assert_matches_hf(tmp_path, hf_model)


def test_hf_sharded_folder_and_normalization_meta(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    preprocessor = {"mean": -4.2677393, "std": 4.5689974, "max_length": 100}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    assert_matches_hf(tmp_path, hf_model)
    model = load_model(tmp_path, r=2)
    assert model.meta == {"mean": -4.2677393, "std": 4.5689974}
    assert model.r_schedule == [2, 2]


def test_hf_folder_of_another_model_type_is_refused(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))
    with pytest.raises(CheckpointError, match="'vit' model"):
        load_model(tmp_path)


def test_hf_weights_file_without_folder_is_refused(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path / "model.safetensors")


# --- original AST checkpoints ----------------------------------------------------------------


def original_ast_state_dict(hf) -> OrderedDict:
    """The HF reference's weights under the original AST's DataParallel names."""
    source = hf.state_dict()
    backbone = "audio_spectrogram_transformer."
    embeddings = backbone + "embeddings."
    unused_head = {"weight": torch.zeros(1000, 192), "bias": torch.zeros(1000)}
    original = OrderedDict(
        {
            "module.v.cls_token": source[embeddings + "cls_token"],
            "module.v.dist_token": source[embeddings + "distillation_token"],
            "module.v.pos_embed": source[embeddings + "position_embeddings"],
        }
    )
    for kind in ("weight", "bias"):
        original[f"module.v.patch_embed.proj.{kind}"] = source[
            f"{embeddings}patch_embeddings.projection.{kind}"
        ]
        for i in range(hf.config.num_hidden_layers):
            layer, block = f"{backbone}layers.{i}.", f"module.v.blocks.{i}."
            qkv = [source[f"{layer}attention.{name}_proj.{kind}"] for name in "qkv"]
            original[f"{block}attn.qkv.{kind}"] = torch.cat(qkv)
            original[f"{block}attn.proj.{kind}"] = source[f"{layer}attention.o_proj.{kind}"]
            original[f"{block}norm1.{kind}"] = source[f"{layer}layernorm_before.{kind}"]
            original[f"{block}norm2.{kind}"] = source[f"{layer}layernorm_after.{kind}"]
            original[f"{block}mlp.fc1.{kind}"] = source[f"{layer}mlp.fc1.{kind}"]
            original[f"{block}mlp.fc2.{kind}"] = source[f"{layer}mlp.fc2.{kind}"]
        original[f"module.v.norm.{kind}"] = source[f"{backbone}layernorm.{kind}"]
        original[f"module.mlp_head.0.{kind}"] = source[f"classifier.layernorm.{kind}"]
        original[f"module.mlp_head.1.{kind}"] = source[f"classifier.dense.{kind}"]
        # The DeiT heads the original AST keeps but never uses.
        original[f"module.v.head.{kind}"] = unused_head[kind]
        original[f"module.v.head_dist.{kind}"] = unused_head[kind].clone()
    return original


@pytest.fixture(scope="module")
def original_reference():
    reference = hf_reference(seed=5, num_labels=7, **HF_ORIGINAL_LIKE)
    reference.classifier.layernorm.eps = 1e-5  # the original mlp_head: torch's default LayerNorm
    return reference


@pytest.fixture
def original_checkpoint(tmp_path, original_reference) -> Path:
    path = tmp_path / "audioset_10_10_test.pth"
    torch.save(original_ast_state_dict(original_reference), path)
    return path


def test_original_ast_checkpoint_gives_reference_logits(original_checkpoint, original_reference):
    model = load_model(original_checkpoint)
    fbank = random_fbank(128, 128)
    expected = logits_of(original_reference, fbank)
    torch.testing.assert_close(logits_of(model, fbank), expected, rtol=0, atol=1e-4)
    config = model.config
    assert (config.embed_dim, config.depth, config.num_heads, config.num_classes) == (192, 2, 3, 7)
    assert (config.fstride, config.tstride, config.target_length) == (10, 10, 128)
    assert config.grid == (12, 12) and config.layer_norm_eps == 1e-6
    assert model.mlp_head[0].eps == 1e-5 and model.norm.eps == 1e-6
    assert (model.meta["mean"], model.meta["std"]) == AST_NORM_STATS["audioset"]
    assert model.labels == []


def test_original_ast_head_eps_survives_a_round_trip_and_hf_keeps_its_own(
        tmp_path, original_checkpoint, original_reference):
    model = load_model(original_checkpoint)
    again = load_model(save_checkpoint(tmp_path / "re.pt", model))
    assert again.mlp_head[0].eps == 1e-5 and again.norm.eps == 1e-6
    hf_folder = tmp_path / "hf"
    original_reference.save_pretrained(hf_folder)
    assert load_model(hf_folder).mlp_head[0].eps == 1e-6  # the config's layer_norm_eps


def test_evaluate_and_predict_agree_on_original_ast_stats(tmp_path, original_reference):
    from fastast_cli.evaluation.evaluate import input_stats
    from fastast_cli.inference.clips import input_spec

    for name, dataset in (("audioset_10_10_x.pth", "audioset"),
                          ("speechcommands_10_10_0.9812.pth", "speechcommands")):
        torch.save(original_ast_state_dict(original_reference), tmp_path / name)
        model = load_model(tmp_path / name)
        spec = input_spec(model)
        assert input_stats(model, None, None) == (spec.mean, spec.std) == AST_NORM_STATS[dataset]
        assert dataset in spec.stats_note


def test_original_ast_checkpoint_at_another_length(original_checkpoint):
    model = load_model(original_checkpoint, target_length=512, r=4)
    source = torch.load(original_checkpoint, weights_only=True)["module.v.pos_embed"]
    assert model.config.grid == (12, 50)
    assert torch.equal(model.pos_embed.data, resample_pos_embed(source, (12, 12), (12, 50)))
    assert logits_of(model, random_fbank(512, 128)).shape == (3, 7)
    assert any("12×12 patch grid to 12×50" in note for note in model.load_notes)


def test_original_ast_checkpoint_with_strides_that_do_not_fit(original_checkpoint):
    with pytest.raises(CheckpointError, match="strides it was trained with"):
        load_model(original_checkpoint, fstride=12, tstride=12)


# --- timm DeiT ImageNet weights --------------------------------------------------------------


@pytest.fixture(scope="module")
def deit_state_dict() -> dict:
    torch.manual_seed(7)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    return {name: tensor.clone() for name, tensor in deit.state_dict().items()}


def deit_grid(deit_state_dict: dict) -> torch.Tensor:
    """DeiT's patch positions as [1, D, 14, 14]."""
    return deit_state_dict["pos_embed"][0, 2:].reshape(14, 14, -1).permute(2, 0, 1)[None]


def test_deit_init_sums_rgb_filters_and_cuts_positions(tmp_path, deit_state_dict):
    path = tmp_path / "deit_tiny_distilled.pth"
    torch.save(deit_state_dict, path)
    model = build_model("tiny", 10, target_length=128)  # 12 × 12 grid < 14 × 14
    head_before = {k: v.clone() for k, v in model.mlp_head.state_dict().items()}
    init_from_pretrained(model, path)
    ours = model.state_dict()

    rgb = deit_state_dict["patch_embed.proj.weight"]
    assert torch.equal(ours["patch_embed.proj.weight"], rgb.sum(dim=1, keepdim=True))
    assert torch.equal(ours["pos_embed"][:, :2], deit_state_dict["pos_embed"][:, :2])
    grid = ours["pos_embed"][0, 2:].reshape(12, 12, -1).permute(2, 0, 1)[None]
    assert torch.equal(grid, deit_grid(deit_state_dict)[:, :, 1:13, 1:13])  # 7 - 6 = 1
    for name, tensor in deit_state_dict.items():
        if name.startswith(("blocks.", "norm.", "cls_token", "dist_token", "patch_embed.proj.b")):
            assert torch.equal(ours[name], tensor), name
    for name, tensor in model.mlp_head.state_dict().items():
        assert torch.equal(tensor, head_before[name])
    assert any("head left freshly initialised for 10 classes" in n for n in model.load_notes)


def test_deit_init_interpolates_longer_time(tmp_path, deit_state_dict):
    path = tmp_path / "deit_tiny_distilled.safetensors"
    save_file(deit_state_dict, path)
    model = load_model(path, num_classes=3, target_length=512)  # 12 × 50 grid
    grid = model.pos_embed.data[0, 2:].reshape(12, 50, -1).permute(2, 0, 1)[None]
    stretched = F.interpolate(deit_grid(deit_state_dict), size=(14, 50), mode="bilinear")
    torch.testing.assert_close(grid, stretched[:, :, 1:13], rtol=0, atol=1e-6)
    assert model.config.num_classes == 3 and model.config.layer_norm_eps == 1e-6
    assert (model.config.embed_dim, model.config.depth, model.config.num_heads) == (192, 12, 3)


def test_deit_needs_num_classes(tmp_path, deit_state_dict):
    path = tmp_path / "deit.pth"
    torch.save({"model": deit_state_dict}, path)  # the official DeiT release wraps it like this
    with pytest.raises(CheckpointError, match="pass num_classes"):
        load_model(path)


# --- fastast checkpoints ---------------------------------------------------------------------


def test_fastast_roundtrip_keeps_logits_config_labels_and_meta(tmp_path):
    model = randomize_(build_model("tiny", 4, depth=2, target_length=128, labels=list("abcd")), 9)
    meta = {"mean": -6.6268077, "std": 5.358466, "dataset": "esc50", "folds": [1, 2, 3, 4]}
    path = save_checkpoint(tmp_path / "run" / "best.pt", model, **meta)
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt"]  # no temporary left

    loaded = load_model(path)
    fbank = random_fbank(128, 128)
    assert torch.equal(logits_of(loaded, fbank), logits_of(model, fbank))
    assert loaded.config == model.config and loaded.labels == ["a", "b", "c", "d"]
    assert loaded.meta == meta
    raw = read_checkpoint(path)
    assert (raw["format"], raw["version"], raw["meta"]) == ("fastast", 1, meta)
    assert raw["config"] == model.config.to_dict()


def test_fastast_load_sets_merging_and_adapts(tmp_path, tiny_checkpoint):
    assert load_model(tiny_checkpoint, r=8).r_schedule == [8, 8]
    assert load_model(tiny_checkpoint, r=4, schedule="decreasing").r_schedule == [8, 0]
    longer = load_model(tiny_checkpoint, target_length=256, num_classes=3)
    assert longer.config.grid == (12, 25) and longer.pos_embed.shape == (1, 2 + 300, 192)
    assert longer.mlp_head[1].weight.shape == (3, 192)
    original = torch.load(tiny_checkpoint, weights_only=True)["model"]
    assert torch.equal(longer.blocks[1].mlp.fc2.weight, original["blocks.1.mlp.fc2.weight"])


def test_optimizer_state_in_meta_reads_back(tmp_path):
    model = build_model("tiny", 2, depth=1, target_length=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.95, 0.999))
    model(random_fbank(32, 128)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "last.pt", model, epoch=1, optimizer=optimizer.state_dict())
    state = read_checkpoint(path)["meta"]["optimizer"]
    assert state["param_groups"][0]["betas"] == (0.95, 0.999)
    assert torch.equal(state["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_run_state_at_the_top_level_stays_out_of_the_model(tmp_path):
    """The new last.pt: optimizer, scaler, progress and averaged beside `model`, not in meta."""
    model = randomize_(build_model("tiny", 2, depth=1, target_length=32), seed=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {"optimizer": optimizer.state_dict(), "scaler": {}, "progress": {"epoch": 1},
             "averaged": None}
    path = save_checkpoint(tmp_path / "last.pt", model, mean=-4.5, std=4.0, state=state)
    payload = read_checkpoint(path)
    assert payload["progress"] == {"epoch": 1} and "optimizer" in payload
    assert set(payload["meta"]) == {"mean", "std"}
    fbank = random_fbank(32, 128)
    for loaded in (load_model(path), load_classifier(path), load_checkpoint(path)):
        assert loaded.meta == {"mean": -4.5, "std": 4.0}
        torch.testing.assert_close(loaded(fbank), model.eval()(fbank))
    with pytest.raises(ValueError, match="cannot replace"):
        save_checkpoint(tmp_path / "x.pt", model, state={"model": {}})


def test_load_checkpoint_reads_the_file_once_and_builds_its_architecture(tmp_path, monkeypatch):
    cnn = CNNClassifier(CNNConfig(3, "mobilenetv3-small", labels=["a", "b", "c"]))
    paths = {"cnn": save_checkpoint(tmp_path / "cnn.pt", cnn),
             "ast": save_checkpoint(tmp_path / "ast.pt", build_model("tiny", 3, depth=1)),
             "elastic": save_checkpoint(tmp_path / "el.pt", build_elastic("tiny", 3, depth=1))}
    reads = []
    read = loading.load_file
    monkeypatch.setattr(loading, "load_file", lambda path: reads.append(path) or read(path))
    for architecture, path in paths.items():
        reads.clear()
        model = load_checkpoint(path)
        assert (model.architecture, reads, model.training) == (architecture, [path], False)
    for architecture in ("cnn", "elastic"):  # not AST weights: named as what they are
        with pytest.raises(CheckpointError, match=f"kind '{architecture}', not an AST: its "
                                                  "weights do not make or initialise an AST"):
            load_model(paths[architecture])


def test_damaged_or_unknown_fastast_checkpoints_give_one_error(tmp_path):
    cnn = CNNClassifier(CNNConfig(3, "mobilenetv3-small"))
    path = save_checkpoint(tmp_path / "cnn.pt", cnn)
    payload = read_checkpoint(path)
    for name, change in {"no_config": {"config": None}, "no_model": {"model": {}},
                         "bad_meta": {"meta": [1]}, "martian": {"architecture": "martian"},
                         "other_head": {"config": {**payload["config"], "num_classes": 5}},
                         "other_backbone": {"config": {**payload["config"], "backbone": "x"}},
                         }.items():
        torch.save({**payload, **change}, tmp_path / f"{name}.pt")
        refusal = "damaged|unknown kind|unusable model config|do not fit the model"
        with pytest.raises(CheckpointError, match=refusal):
            load_classifier(tmp_path / f"{name}.pt")
    ast = read_checkpoint(save_checkpoint(tmp_path / "ast.pt", build_model("tiny", 3, depth=1)))
    for name, change in {"text_depth": {"depth": "two"}, "no_patch": {"patch_size": 0},
                         "odd_heads": {"num_heads": 5}, "wide": {"embed_dim": 384}}.items():
        torch.save({**ast, "config": {**ast["config"], **change}}, tmp_path / f"{name}.pt")
        with pytest.raises(CheckpointError, match="model config|does not fit the model"):
            load_classifier(tmp_path / f"{name}.pt")
    elastic = build_elastic("tiny", 3, depth=1)
    elastic = read_checkpoint(save_checkpoint(tmp_path / "el.pt", elastic))
    torch.save({**elastic, "config": {**elastic["config"], "num_classes": 5}}, tmp_path / "el5.pt")
    with pytest.raises(CheckpointError, match=r"wrongly shaped \(2\):\n    mlp_head.1.weight"):
        load_classifier(tmp_path / "el5.pt")


def test_meta_that_cannot_be_read_back_is_refused(tmp_path):
    model = build_model("tiny", 2, depth=1)
    with pytest.raises(TypeError, match=r"meta\['where'\] is a PosixPath"):
        save_checkpoint(tmp_path / "x.pt", model, where=tmp_path)
    with pytest.raises(TypeError, match=r"meta\['stats'\]\['mean'\] is a float64"):
        save_checkpoint(tmp_path / "x.pt", model, stats={"mean": np.float64(-4.27)})
    assert not (tmp_path / "x.pt").exists()


# --- bad input -------------------------------------------------------------------------------


class RunsCommand:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "code-ran"
    payload = {"model": RunsCommand(f"touch {marker}")}
    path = tmp_path / "evil.pth"
    if writer == "torch":
        torch.save(payload, path)
    else:
        with path.open("wb") as file:
            pickle.dump(payload, file, protocol=2)  # torch's protocol: reaches the GLOBAL
    refused = r"needs unsafe unpickling \(it refers to \w+\.system\) and is refused"
    with pytest.raises(CheckpointError, match=refused):
        load_model(path)
    assert not marker.exists()


def test_missing_text_truncated_and_empty_files(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nothing.pt")
    text = tmp_path / "notes.txt"
    text.write_text("epoch 3: accuracy 0.95\n")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (text, truncated, empty):
        with pytest.raises(CheckpointError, match="is not a checkpoint"):
            load_model(path)
    broken = tmp_path / "broken.safetensors"
    broken.write_text("not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(broken)


def test_folder_without_config_json(tmp_path):
    with pytest.raises(CheckpointError, match="without config.json"):
        load_model(tmp_path)


def test_other_checkpoints_are_not_fastast(original_checkpoint):
    with pytest.raises(CheckpointError, match="not a fastast checkpoint"):
        read_checkpoint(original_checkpoint)


def test_tiny_checkpoint_into_base_model_names_shapes(tiny_checkpoint):
    base = build_model("base", 5, depth=2, target_length=128)
    with pytest.raises(CheckpointError) as caught:
        init_from_pretrained(base, tiny_checkpoint)
    message = str(caught.value)
    assert "cls_token: checkpoint [1, 1, 192] vs model [1, 1, 768]" in message
    assert "blocks.0.attn.qkv.weight: checkpoint [576, 192] vs model [2304, 768]" in message
    assert "attention heads: checkpoint 3 vs model 12" in message
    assert "... and" in message  # long lists are shortened


def test_depth_mismatch_lists_missing_and_unexpected(tmp_path, tiny_checkpoint):
    deeper = build_model("tiny", 5, depth=3, target_length=128)
    with pytest.raises(CheckpointError, match=r"missing \(12\):\n    blocks\.2\.norm1\.weight"):
        init_from_pretrained(deeper, tiny_checkpoint)
    shallower = build_model("tiny", 5, depth=1, target_length=128)
    with pytest.raises(CheckpointError, match=r"unexpected \(12\):\n    blocks\.1\."):
        init_from_pretrained(shallower, tiny_checkpoint)


def test_copy_of_hf_folder_without_weights(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path / "full")
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "full" / "config.json", tmp_path / "bare" / "config.json")
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        load_model(tmp_path / "bare")
