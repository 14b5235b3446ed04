"""CNN teachers: shapes, pooling arithmetic, ImageNet weight conversion."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from fastast_cli.errors import CheckpointError
from fastast_cli.models.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from fastast_cli.models.classifiers import build_classifier, load_classifier
from fastast_cli.models.teachers import (
    CNNClassifier,
    CNNConfig,
    MeanPool,
    PSLAAttentionPool,
    SoftmaxAttentionPool,
    imagenet_to_one_channel,
)


def test_cnn_teacher_reads_an_fbank_and_returns_logits():
    model = CNNClassifier(CNNConfig(num_classes=7, backbone="efficientnet-b0")).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 100, 128))
    assert logits.shape == (2, 7)
    assert model.backbone.conv_stem.weight.shape[1] == 1


def test_mean_pool_is_mean_then_linear():
    pool = MeanPool(4, 3)
    features = torch.randn(2, 4, 5, 6)
    expected = pool.fc(features.flatten(2).mean(-1))
    torch.testing.assert_close(pool(features), expected)


def hand_set_psla_pool(head_weights: list[float]) -> PSLAAttentionPool:
    """One channel, one class, two heads. Head 1: attention sigmoid(x), scores sigmoid(-x);
    head 2: attention sigmoid(0) (uniform), scores sigmoid(x)."""
    pool = PSLAAttentionPool(1, 1, heads=2)
    with torch.no_grad():
        pool.attention.weight.copy_(torch.tensor([[1.0], [0.0]]))
        pool.classify.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        pool.attention.bias.zero_()
        pool.classify.bias.zero_()
        pool.head_weights.copy_(torch.tensor(head_weights))
    return pool


def test_psla_attention_pool_by_hand():
    """features [1, 1, f=2, t=2] → frequency means x = [0, ln 3] over time.
    Head 1: attention sigmoid(x) = [1/2, 3/4] → normalised [0.4, 0.6]; scores sigmoid(-x) =
    [1/2, 1/4] → p1 = 0.4·0.5 + 0.6·0.25 = 0.35. Head 2: attention [1/2, 1/2] → [0.5, 0.5];
    scores sigmoid(x) = [1/2, 3/4] → p2 = 0.625. Head weights [0.2, 0.6] → p = 0.07 + 0.375
    = 0.445; the model returns its logit ln(0.445 / 0.555)."""
    features = torch.tensor([[[[0.0, 2 * math.log(3)], [0.0, 0.0]]]])  # [B, C, f, t]
    pool = hand_set_psla_pool([0.2, 0.6])
    torch.testing.assert_close(pool.probabilities(features), torch.tensor([[0.445]]))
    torch.testing.assert_close(pool(features), torch.tensor([[math.log(0.445 / 0.555)]]))
    # PSLA's initial head weights are 1/H: (0.35 + 0.625) / 2
    fresh = PSLAAttentionPool(1, 1, heads=2)
    torch.testing.assert_close(fresh.head_weights.detach(), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(hand_set_psla_pool([0.5, 0.5]).probabilities(features),
                               torch.tensor([[0.4875]]))


def test_psla_pool_logits_stay_finite_and_its_head_weights_learn():
    pool = hand_set_psla_pool([0.5, 0.5])
    with torch.no_grad():
        pool.classify.bias.fill_(100.0)  # every score sigmoid(100) = 1 in float32
    features = torch.randn(2, 1, 3, 4, requires_grad=True)
    logits = pool(features)
    assert torch.isfinite(logits).all() and logits.max() < 16.2
    pool = hand_set_psla_pool([0.5, 0.5])
    pool(features).sum().backward()
    assert pool.head_weights.grad is not None and pool.head_weights.grad.abs().min() > 0


def test_new_attention_teachers_pool_as_psla():
    model = build_classifier("mobilenetv3-small", ["a", "b", "c"], target_length=64,
                             pooling="attention")
    assert isinstance(model.pool, PSLAAttentionPool) and model.config.pooling_version == 2


def test_softmax_attention_pool_with_uniform_attention_is_a_mean_over_time():
    pool = SoftmaxAttentionPool(4, 3, heads=2)
    torch.nn.init.zeros_(pool.attention.weight)
    torch.nn.init.zeros_(pool.attention.bias)
    features = torch.randn(2, 4, 5, 6)
    frames = features.mean(2).transpose(1, 2)
    scores = pool.classify(frames).reshape(2, 6, 2, 3)
    torch.testing.assert_close(pool(features), scores.mean(dim=(1, 2)))


def test_attention_checkpoints_written_before_psla_pooling_score_unchanged(tmp_path):
    """A file from before PSLA's pooling: config without pooling_version, pool weights
    `attention`/`classify` only. It loads with its softmax attention and gives the logits that
    pooling computes (written out here), and saving it again keeps version 1."""
    torch.manual_seed(0)
    old = CNNClassifier(CNNConfig(3, "mobilenetv3-small", "attention", heads=2,
                                  pooling_version=1)).eval()
    path = save_checkpoint(tmp_path / "old.pt", old)
    payload = read_checkpoint(path)
    del payload["config"]["pooling_version"]
    torch.save(payload, path)
    model = load_classifier(path)
    assert isinstance(model.pool, SoftmaxAttentionPool) and model.config.pooling_version == 1
    fbank = torch.randn(2, 64, 128)
    with torch.inference_mode():
        features = model.backbone.forward_features(fbank.unsqueeze(1).transpose(2, 3))
        frames = features.mean(2).transpose(1, 2)  # [B, t, C]
        weights = model.pool.attention(frames).reshape(2, -1, 2, 3).softmax(dim=1)
        scores = model.pool.classify(frames).reshape(2, -1, 2, 3)
        expected = (weights * scores).sum(1).mean(1)
        torch.testing.assert_close(model(fbank), expected)
        torch.testing.assert_close(model(fbank), old(fbank))
    again = save_checkpoint(tmp_path / "again.pt", model)
    assert isinstance(load_checkpoint(again).pool, SoftmaxAttentionPool)


def test_a_damaged_pooling_version_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", CNNClassifier(CNNConfig(3, "mobilenetv3-small")))
    payload = read_checkpoint(path)
    payload["config"]["pooling_version"] = 7
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="unknown pooling version 7"):
        load_checkpoint(path)


def test_imagenet_weights_become_one_channel():
    rgb = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    converted = imagenet_to_one_channel(rgb)
    assert not any(k.startswith("classifier.") for k in converted)
    torch.testing.assert_close(converted["conv_stem.weight"],
                               rgb["conv_stem.weight"].sum(1, keepdim=True))
    model = CNNClassifier(CNNConfig(num_classes=3, backbone="efficientnet-b0"))
    model.backbone.load_state_dict(converted)  # strict: every backbone key fits


def test_unknown_backbone_or_pooling():
    with pytest.raises(ValueError, match="unknown CNN"):
        CNNClassifier(CNNConfig(num_classes=3, backbone="resnet-9000"))
    with pytest.raises(ValueError, match="unknown pooling"):
        CNNClassifier(CNNConfig(num_classes=3, pooling="max"))


def test_pretrained_backbone_file_fits_strictly(tmp_path):
    torch.manual_seed(0)
    rgb = timm.create_model("mobilenetv3_small_100", pretrained=False).state_dict()
    torch.save(rgb, tmp_path / "imagenet.pth")
    model = build_classifier("mobilenetv3-small", ["a", "b"], target_length=64,
                             pretrained=tmp_path / "imagenet.pth")
    torch.testing.assert_close(model.backbone.conv_stem.weight,
                               rgb["conv_stem.weight"].sum(1, keepdim=True))
    with pytest.raises(CheckpointError, match=r"do not fit the model:\n  wrongly shaped"):
        build_classifier("efficientnet-b0", ["a", "b"], target_length=64,
                         pretrained=tmp_path / "imagenet.pth")
