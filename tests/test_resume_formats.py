"""`last.pt` layouts: this one (the run's state at the top level) and the one before (state in
`meta`, tests/fixtures/old_format, written by fastast before issue 9); both resume."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.models.checkpoints import read_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.training.resume import STATE_KEYS

pytestmark = pytest.mark.usefixtures("one_thread")

OLD = Path(__file__).parent / "fixtures" / "old_format"
RECIPE = "model: ast\nsize: tiny\ndepth: 1\nfstride: 16\ntstride: 16\nloss: ce\n" \
         "metric: accuracy\nlr_start: 6\n"
COMMON = ["--epochs", "2", "--batch-size", "16", "--fold", "1", "--seed", "0", "--lr", "1e-3",
          "--num-workers", "0", "--device", "cpu"]


def old_run(kind: str, out: Path) -> Path:
    """A copy of the fixture run `kind` (stopped mid-epoch 2) in `out`; a distilled run's
    recorded teacher is pointed at the copy of the fixture's teacher, as if it had stayed put."""
    shutil.copytree(OLD / kind, out)
    if kind == "ast":
        teacher = out.parent / "teacher.pt"
        shutil.copy2(OLD / "cnn" / "best.pt", teacher)
        payload = torch.load(out / "last.pt", weights_only=True)
        payload["meta"]["train_config"]["teacher_checkpoint"] = str(teacher)
        torch.save(payload, out / "last.pt")
    return out


def command(kind: str, data: Path, out: Path, recipe: Path) -> list[str]:
    """The flags the fixture run was made with (tests/fixtures/old_format/README.txt)."""
    flags = ["--recipe", str(recipe), "--data", str(data.parent), "--out", str(out), *COMMON]
    if kind == "cnn":
        return ["train-teacher", *flags, "--model", "mobilenetv3-small"]
    if kind == "elastic":
        return ["train-teacher", *flags, "--elastic", "--max-tokens", "256"]
    return ["distill", *flags, "--r", "2", "--teacher-checkpoint",
            str(out.parent / "teacher.pt")]


def to_new_layout(path: Path) -> None:
    """Rewrite an old last.pt with its state moved out of `meta` to the top level."""
    payload = torch.load(path, weights_only=True)
    for key in STATE_KEYS:
        payload[key] = payload["meta"].pop(key)
    torch.save(payload, path)


@pytest.mark.parametrize("kind", ["cnn", "ast", "elastic"])
def test_an_old_mid_epoch_last_pt_resumes_and_finishes_like_the_new_layout(
    kind, small_demo, tmp_path
):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    old = old_run(kind, tmp_path / "old")
    new = old_run(kind, tmp_path / "new")
    to_new_layout(new / "last.pt")
    saved = torch.load(OLD / kind / "last.pt", weights_only=True)["meta"]["progress"]
    assert (saved["epoch"], saved["batch"]) == (1, 3)  # stopped in epoch 2, after batch 3
    for out in (old, new):
        result = CliRunner().invoke(app, [*command(kind, small_demo, out, recipe), "--resume"])
        assert result.exit_code == 0, result.output
        assert "resuming" in result.output and "epoch 2, batch 3" in result.output
        rows = list(csv.DictReader((out / "log.csv").open()))
        assert [row["epoch"] for row in rows] == ["1", "2"]
        assert rows[0] == next(csv.DictReader((OLD / kind / "log.csv").open()))
        assert (out / "summary.json").is_file()
        finished = read_checkpoint(out / "last.pt")
        assert finished["progress"]["epoch"] == 2 and finished["progress"]["step"] > saved["step"]
        assert not set(STATE_KEYS) & finished["meta"].keys()  # meta describes the model only
    # both layouts restore the same state: the runs finish with the same weights
    old_weights = read_checkpoint(old / "last.pt")["model"]
    for name, tensor in read_checkpoint(new / "last.pt")["model"].items():
        torch.testing.assert_close(old_weights[name], tensor, rtol=0, atol=0)
    assert not torch.equal(next(iter(old_weights.values())),
                           next(iter(read_checkpoint(OLD / kind / "last.pt")["model"].values())))


def test_last_pt_keeps_the_run_state_at_its_top_level_and_loads_as_a_model(small_demo,
                                                                           tmp_path):
    from fastast_cli.training.config import TrainConfig
    from fastast_cli.training.loop import train

    out = tmp_path / "run"
    train(TrainConfig(model="ast", size="tiny", depth=1, fstride=16, tstride=16,
                      data=str(small_demo), out=str(out), epochs=1, batch_size=16, loss="ce",
                      num_workers=0, device="cpu", average_from=1, average_to=1))
    payload = read_checkpoint(out / "last.pt")
    assert {"format", "version", "architecture", "config", "model", "meta",
            *STATE_KEYS} == payload.keys()
    assert payload["progress"]["epoch"] == 1 and payload["progress"]["averaged_epochs"] == 1
    assert payload["optimizer"]["state"]  # Adam's moments after a step
    assert payload["averaged"].keys() == payload["model"].keys()
    assert not set(STATE_KEYS) & payload["meta"].keys()
    assert payload["meta"]["train_config"]["epochs"] == 1 and payload["meta"]["mean"] < 0
    model = load_classifier(out / "last.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, payload["model"][name]), name


@pytest.mark.parametrize("damage", ["best.pt as last.pt", "state of another model", "no meta"])
def test_a_last_pt_without_a_fitting_state_is_refused_in_one_line(damage, small_demo, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    out = old_run("cnn", tmp_path / "run")
    if damage == "best.pt as last.pt":
        shutil.copy2(out / "best.pt", out / "last.pt")
        message = "no training state"
    elif damage == "no meta":  # meta None: the state is found, the model's config is not
        payload = torch.load(out / "last.pt", weights_only=True)
        payload["meta"] = None
        torch.save(payload, out / "last.pt")
        message = "no training state"
    else:  # the optimizer of a 1-block AST in a CNN's last.pt
        payload = torch.load(out / "last.pt", weights_only=True)
        payload["meta"]["optimizer"] = torch.load(OLD / "ast" / "last.pt",
                                                  weights_only=True)["meta"]["optimizer"]
        torch.save(payload, out / "last.pt")
        message = "its state does not fit this run"
    before = (out / "last.pt").read_bytes()
    result = CliRunner().invoke(app, [*command("cnn", small_demo, out, recipe), "--resume"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert (out / "last.pt").read_bytes() == before
