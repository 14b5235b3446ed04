"""Checkpoints written before the one-engine refactor (tests/fixtures/old_format, see its
README.txt: tiny AST, ElasticAST and CNN teacher runs, each a best.pt and a mid-epoch last.pt)
load through the public entry points, give the logits and metrics recorded with the code that
wrote them, and keep their meta."""

from pathlib import Path

import pytest
import torch

from fastast_cli import load_model
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation.evaluate import evaluate_checkpoint
from fastast_cli.models.checkpoints import load_checkpoint, read_checkpoint
from fastast_cli.models.classifiers import load_classifier

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures" / "old_format"
KINDS = ("ast", "elastic", "cnn")
FILES = [f"{kind}/{name}" for kind in KINDS for name in ("best.pt", "last.pt")]
DEMO_LABELS = ["tone", "chirp_up", "chirp_down", "noise_burst", "clicks", "tremolo", "buzz",
               "dual_tone", "beeps", "rumble"]
# What the runs recorded (make_fixtures.py): demo stats of fold 1, r = 2 for the distilled AST.
DEMO_MEAN, DEMO_STD = -6.462500079917059, 3.978924776494957
RECORDED_R = {"ast": 2, "elastic": 0, "cnn": 0}


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(FIXTURES / "expected.pt", weights_only=True)


def fixture_input(kind: str, expected: dict) -> torch.Tensor | list[torch.Tensor]:
    """[2, 200, 128] fbanks for fixed-length models, two clips [48 | 128, 128] for ElasticAST."""
    return expected["inputs"]["clips" if kind == "elastic" else "fixed"]


@pytest.mark.parametrize("name", FILES)
def test_old_checkpoint_gives_the_recorded_logits(name, expected):
    kind = name.split("/")[0]
    model = load_classifier(FIXTURES / name)
    with torch.inference_mode():
        logits = model(fixture_input(kind, expected))  # [2, 10]
    torch.testing.assert_close(logits, expected["logits"][name], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FILES)
def test_old_checkpoint_keeps_its_meta(name):
    kind = name.split("/")[0]
    model = load_checkpoint(FIXTURES / name)
    assert model.architecture == kind
    assert model.config.labels == DEMO_LABELS
    assert (model.meta["mean"], model.meta["std"]) == (DEMO_MEAN, DEMO_STD)
    spec = model.input_spec()
    assert (spec.mean, spec.std, spec.num_mel_bins) == (DEMO_MEAN, DEMO_STD, 128)
    assert spec.native_length == (kind == "elastic")
    assert model.meta["fold"] == 1
    assert model.meta["merging"] == {"method": "tome", "r": RECORDED_R[kind],
                                     "schedule": "constant", "proportional_attention": False}


@pytest.mark.parametrize("kind", ["ast", "elastic"])
def test_old_checkpoint_merges_as_recorded(kind):
    """r as recorded; proportional attention as recorded for a merged run, on for an unmerged
    one (MergeSettings.from_meta: merging it later is off-the-shelf use)."""
    settings = load_classifier(FIXTURES / kind / "best.pt").merge_settings
    assert (settings.r, settings.source) == (RECORDED_R[kind], "checkpoint")
    assert settings.proportional_attention == (RECORDED_R[kind] == 0)


def test_old_last_checkpoint_keeps_its_run_state_in_meta():
    """The old layout: optimizer, scaler, progress and averaged inside meta (resume reads them)."""
    payload = read_checkpoint(FIXTURES / "ast" / "last.pt")
    assert {"optimizer", "scaler", "progress", "averaged"} <= set(payload["meta"])
    assert payload["meta"]["progress"]["epoch"] == 1  # stopped in its second epoch


def test_old_ast_checkpoint_loads_through_load_model(expected):
    model = load_model(FIXTURES / "ast" / "best.pt", r=2)  # as the README shows
    with torch.inference_mode():
        logits = model(fixture_input("ast", expected))
    torch.testing.assert_close(logits, expected["logits"]["ast/best.pt"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_old_checkpoint_evaluates_as_before(kind, small_demo, expected):
    """The small demo set is the one the runs trained on (prepare_demo, 8 clips per class)."""
    evaluation = evaluate_checkpoint(FIXTURES / kind / "best.pt", load_manifest(small_demo))
    recorded = expected["metrics"][kind]
    assert evaluation.fold == recorded["fold"] == 1
    for metric in ("accuracy", "mAP", "mAUC", "d_prime"):
        assert getattr(evaluation.metrics, metric) == pytest.approx(recorded[metric], abs=1e-6)
