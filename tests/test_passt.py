"""PaSST teacher through hear21passt: logits, checkpoint round trip, weight adaptation."""

from __future__ import annotations

import pytest
import torch

from fastast_cli.errors import FastASTError
from fastast_cli.models import passt as passt_module
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.models.checkpoints.passt import fit_time_table, load_passt_weights
from fastast_cli.models.classifiers import build_classifier, load_classifier, model_kind

pytest.importorskip("hear21passt")
LABELS = ["a", "b", "c"]


def test_passt_teacher_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("passt", LABELS, target_length=64).eval()
    fbank = torch.randn(2, 64, 128)
    with torch.no_grad():
        logits = model(fbank)
    assert logits.shape == (2, 3) and model_kind(model) == "passt"
    path = save_checkpoint(tmp_path / "passt.pt", model, mean=-5.0, std=4.0)
    loaded = load_classifier(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(fbank), logits)
    assert loaded.labels == LABELS and loaded.meta["mean"] == -5.0


def test_pretrained_passt_weights_adapt_time_and_head():
    torch.manual_seed(0)
    source = build_classifier("passt", ["x"] * 527, target_length=96)
    weights = source.net.state_dict()
    target = build_classifier("passt", LABELS, target_length=64)
    notes = load_passt_weights(target, weights)
    assert any("time positions" in note for note in notes)
    assert any("head" in note for note in notes)
    table = target.net.state_dict()["time_new_pos_embed"]
    torch.testing.assert_close(table, weights["time_new_pos_embed"][..., : table.shape[-1]])
    torch.testing.assert_close(target.net.state_dict()["blocks.0.attn.qkv.weight"],
                               weights["blocks.0.attn.qkv.weight"])


def test_pretrained_passt_file_with_wrapper_names(tmp_path):
    """A state-dict file saved from a wrapper (`net.` names) initialises the teacher's net."""
    torch.manual_seed(0)
    weights = build_classifier("passt", LABELS, target_length=64).net.state_dict()
    torch.save({f"net.{name}": tensor for name, tensor in weights.items()}, tmp_path / "p.pt")
    model = build_classifier("passt", LABELS, target_length=64, pretrained=tmp_path / "p.pt")
    for name, tensor in model.net.state_dict().items():
        torch.testing.assert_close(tensor, weights[name])


def test_time_table_interpolates_when_longer():
    table = torch.arange(4.0).reshape(1, 1, 1, 4)
    assert fit_time_table(table, 2).tolist() == [[[[0.0, 1.0]]]]
    assert fit_time_table(table, 8).shape == (1, 1, 1, 8)


def test_clear_message_without_the_package(monkeypatch):
    monkeypatch.setattr(passt_module, "passt_available", lambda: False)
    with pytest.raises(FastASTError, match="pip install"):
        build_classifier("passt", LABELS, target_length=64)
