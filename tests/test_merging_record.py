"""`model.merging`: one frozen record per model, read and written whole; the per-block r and the
method instance follow it; views and timing swap it and put it back; one check of method names."""

from __future__ import annotations

import pytest
import torch

from fastast_cli.cli._merging import method_name
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.sweep import method_view
from fastast_cli.evaluation.throughput import sweep_throughputs
from fastast_cli.export.reduction import apply_reduction
from fastast_cli.models.ast import build_model
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.elastic import build_elastic
from fastast_cli.models.reduction import make_method
from fastast_cli.models.reduction.settings import MergeSettings, MergingView, merging_as

pytestmark = pytest.mark.usefixtures("one_thread")

BAD = ("unknown token reduction method 'sideways': choose one of tome, pitome, evit, tofu, "
       "random")


def tiny_ast():
    torch.manual_seed(0)
    return build_model("tiny", 3, target_length=64, depth=2).eval()


def test_the_record_set_is_the_record_read_and_what_the_blocks_run():
    model = tiny_ast()
    settings = MergeSettings(3, "decreasing", False, "flags", "pitome", {"margin_start": 0.7})
    model.merging = settings
    assert model.merging is settings
    assert model.r_schedule == [6, 0] and model.proportional_attention is False
    assert model.reduction_method == "pitome" and model.reduction.margin_start == 0.7
    assert model.merge_settings is settings  # the older name reads the same record
    elastic = build_elastic("tiny", 3, depth=2, target_length=64)
    fraction = MergeSettings(0.25, "decreasing", True, "flags", "random", {"seed": 7})
    elastic.merging = fraction
    assert elastic.merging is fraction
    assert (elastic.r_fraction, elastic.schedule, elastic.reduction_options) == (
        0.25, "decreasing", {"seed": 7})
    assert elastic.clip_schedule(2 + 4 * 8) == [16, 0]  # round(0.25 × 32) = 8, as 2r → 0


def test_set_r_builds_a_record_and_keeps_what_it_is_not_given():
    model = tiny_ast()
    model.merging = MergeSettings(2, proportional_attention=False, source="checkpoint",
                                  method="tofu", method_options={"switch": 1})
    model.set_r(4, "decreasing")
    assert model.merging == MergeSettings(4, "decreasing", False, "flags", "tofu", {"switch": 1})
    model.set_r(4, method="evit")  # another method starts from its own defaults
    assert (model.merging.method, model.merging.method_options) == ("evit", None)


@pytest.mark.parametrize("bad", [MergeSettings(4, method="sideways"),
                                 MergeSettings(4, method="random", method_options={"sed": 1}),
                                 MergeSettings(4, "sideways"), MergeSettings(-1)])
def test_a_refused_record_changes_nothing(bad):
    model = tiny_ast()
    good = MergeSettings(2, method="pitome")
    model.merging = good
    with pytest.raises(ValueError):
        model.merging = bad
    with pytest.raises(ValueError):  # set_r builds the same record: refused whole, too
        model.set_r(bad.r, bad.schedule, method=bad.method, method_options=bad.method_options)
    assert model.merging is good and model.r_schedule == [2, 2]
    assert model.reduction_method == "pitome"


def test_a_sweep_view_runs_its_record_and_leaves_the_model_as_it_was():
    model = tiny_ast().set_r(4)
    before = model.merging
    view = method_view(model, "pitome")
    assert isinstance(view, MergingView) and view.model is model
    assert view.merging == before.overridden(method="pitome")
    assert view.reduction_method == "pitome" and model.reduction_method == "tome"
    assert method_view(model, "tome") is model and method_view(model, None) is model
    batch = torch.randn(2, 64, 128)
    with torch.no_grad():
        seen = view(batch)
        with merging_as(model, view.merging):
            expected = model(batch)
        assert not torch.equal(seen, model(batch))  # ToMe's merges are not PiToMe's
    torch.testing.assert_close(seen, expected, rtol=0, atol=0)
    assert model.merging is before
    rows = sweep_throughputs([model, view], [[0, 4], [4]], batch_size=2, device="cpu",
                             warmup=0, runs=1)
    assert [[row.r for row in model_rows] for model_rows in rows] == [[0, 4], [4]]
    assert model.merging is before
    with pytest.raises(RuntimeError), merging_as(model, view.merging):
        raise RuntimeError("a failed run")
    assert model.merging is before  # put back on errors too


def test_a_bad_method_name_gets_the_one_message_at_every_entry_point(tmp_path):
    model = tiny_ast()
    refusals = [
        lambda: make_method("sideways"),
        lambda: model.set_r(4, method="sideways"),
        lambda: setattr(model, "merging", MergeSettings(4, method="sideways")),
        lambda: build_model("tiny", 3, target_length=64, depth=2, method="sideways"),
        lambda: build_elastic("tiny", 3, depth=2, target_length=64, method="sideways"),
        lambda: method_name("sideways"),  # --method of every command
        lambda: apply_reduction(model, "sideways", 4),  # export of any checkpoint
    ]
    for refuse in refusals:
        with pytest.raises((ValueError, FastASTError)) as caught:
            refuse()
        assert str(caught.value) == BAD
    path = save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(FastASTError) as caught:  # the Python API and every loading command
        load_classifier(path, method="sideways")
    assert str(caught.value).endswith(f"({BAD})")
    assert model.merging == MergeSettings()
