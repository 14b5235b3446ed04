"""PaSST teacher through hear21passt: logits, checkpoint round trip, weight adaptation."""

from __future__ import annotations

import pytest
import torch

from fastast_cli.errors import CheckpointError, FastASTError
from fastast_cli.models import passt as passt_module
from fastast_cli.models.checkpoints import PretrainedWeights, load_model, save_checkpoint
from fastast_cli.models.checkpoints.fitting import fit_weights
from fastast_cli.models.checkpoints.passt import read_passt_weights
from fastast_cli.models.classifiers import build_classifier, load_classifier, model_kind
from fastast_cli.models.pos_embed import fit_time_table

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


def test_a_passt_file_is_read_into_the_shared_weights_record(tmp_path):
    """PaSST's names (as released) become the teacher's; the tables give grid and input size."""
    torch.manual_seed(0)
    source = build_classifier("passt", ["x"] * 527, target_length=998)
    torch.save(source.net.state_dict(), tmp_path / "passt.pt")
    weights = read_passt_weights(tmp_path / "passt.pt")
    assert isinstance(weights, PretrainedWeights) and weights.source == "PaSST state dict"
    assert weights.grid == (12, 99)  # (128 - 16) // 10 + 1 rows, (998 - 16) // 10 + 1 columns
    assert weights.config.num_classes == 527 and weights.has_head
    assert (weights.config.num_mel_bins, weights.config.target_length) == (128, 998)
    assert weights.state_dict.keys() == source.state_dict().keys()  # `net.` names


def test_pretrained_passt_weights_adapt_time_and_head(tmp_path):
    torch.manual_seed(0)
    source = build_classifier("passt", ["x"] * 527, target_length=96)
    weights = source.net.state_dict()
    torch.save(weights, tmp_path / "passt.pt")
    target = build_classifier("passt", LABELS, target_length=64)
    fit_weights(target, read_passt_weights(tmp_path / "passt.pt"), tmp_path / "passt.pt")
    columns = target.net.time_new_pos_embed.shape[-1]
    assert f"time positions adapted from 9 to {columns} columns" in target.load_notes
    assert any("head left freshly initialised for 3 classes (checkpoint: 527)" in note
               for note in target.load_notes)
    table = target.net.state_dict()["time_new_pos_embed"]
    torch.testing.assert_close(table, weights["time_new_pos_embed"][..., : table.shape[-1]])
    torch.testing.assert_close(target.net.state_dict()["blocks.0.attn.qkv.weight"],
                               weights["blocks.0.attn.qkv.weight"])


def test_passt_weights_that_cannot_fit_are_named_and_refused_as_an_ast(tmp_path):
    """Other mel bins: the frequency table is not adapted, and the one fit check names it. As
    AST weights, a PaSST file is refused with what it is."""
    torch.manual_seed(0)
    path = tmp_path / "passt.pt"
    torch.save(build_classifier("passt", LABELS, target_length=64, num_mel_bins=64).net
               .state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit the model:\n  wrongly shaped "
                                              r"\(1\):\n    net.freq_new_pos_embed"):
        build_classifier("passt", LABELS, target_length=64, pretrained=path)
    with pytest.raises(CheckpointError, match="holds PaSST weights"):
        load_model(path)
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a PaSST state dict: it has no freq_new_pos"):
        build_classifier("passt", LABELS, target_length=64, pretrained=tmp_path / "other.pt")


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


def test_a_passt_front_end_teacher_gives_hear21passts_logits_on_a_waveform(monkeypatch):
    """PaSST's own front end (32 kHz, 128 mels, window 800, hop 320), not AST's fbank: with the
    same (random) state dict, our teacher and hear21passt's own model agree on a waveform."""
    from hear21passt import base

    real = base.get_model_passt  # hear21passt's model as it builds it, without the download
    monkeypatch.setattr(base, "get_model_passt", lambda **kw: real(**kw, pretrained=False))

    torch.manual_seed(0)
    ours = build_classifier("passt", [f"c{i}" for i in range(527)], target_length=998,
                            front_end="passt").eval()
    spec = ours.input_spec()
    assert (spec.waveform_rate, spec.waveform_samples()) == (32000, 319360)  # 998 hops of 320
    theirs = base.get_basic_model(mode="logits").eval()
    theirs.net.load_state_dict(ours.net.state_dict())
    wave = 0.1 * torch.randn(1, spec.waveform_samples())
    with torch.no_grad():
        torch.testing.assert_close(ours(wave), theirs(wave), rtol=1e-5, atol=1e-5)
    assert ours.state_dict().keys() == build_classifier(
        "passt", LABELS, target_length=998).state_dict().keys()  # the mels hold no weights


def test_a_passt_checkpoint_saved_before_front_ends_reads_fbanks_as_before(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("passt", LABELS, target_length=64).eval()
    path = save_checkpoint(tmp_path / "passt.pt", model, mean=-5.0, std=4.0)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["front_end"]  # as written before the front end was recorded
    torch.save(payload, path)
    loaded = load_classifier(path)
    fbank = torch.randn(2, 64, 128)
    assert loaded.config.front_end == "fbank" and loaded.input_spec().waveform_rate is None
    with torch.no_grad():
        torch.testing.assert_close(loaded(fbank), model(fbank))
    with pytest.raises(FastASTError, match="reads 32-kHz waveforms"):
        build_classifier("passt", LABELS, target_length=64, front_end="passt")(fbank)


def test_passt_leaves_its_distillation_head_unused_and_ddp_is_told():
    """hear21passt's distilled ViT keeps `head_dist`, which the teacher's forward never uses:
    DDP must look for unused parameters (see `fastast_cli.distributed.unused_parameters`)."""
    from fastast_cli.distributed import unused_parameters

    model = build_classifier("passt", LABELS, target_length=64)
    assert unused_parameters(model, model.input_spec().example(torch.device("cpu"))) == [
        "net.head_dist.weight", "net.head_dist.bias"]
