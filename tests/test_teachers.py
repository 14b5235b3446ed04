"""CNN teachers: shapes, pooling arithmetic, ImageNet weight conversion."""

from __future__ import annotations

import pytest
import timm
import torch

from fastast_cli.errors import CheckpointError
from fastast_cli.models.classifiers import build_classifier
from fastast_cli.models.teachers import (
    AttentionPool,
    CNNClassifier,
    CNNConfig,
    MeanPool,
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


def test_attention_pool_with_uniform_attention_is_a_mean_over_time():
    pool = AttentionPool(4, 3, heads=2)
    torch.nn.init.zeros_(pool.attention.weight)
    torch.nn.init.zeros_(pool.attention.bias)
    features = torch.randn(2, 4, 5, 6)
    frames = features.mean(2).transpose(1, 2)
    scores = pool.classify(frames).reshape(2, 6, 2, 3)
    torch.testing.assert_close(pool(features), scores.mean(dim=(1, 2)))


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
