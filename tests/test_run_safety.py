"""Training runs never lose a user's files or an epoch: run folders, Ctrl-C anywhere, checks of
the clips before any work, logs after a crash, the teacher's kind, recipe values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from signal_defaults import as_from_a_terminal
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.models.checkpoints import read_checkpoint, save_checkpoint
from fastast_cli.training import loop as loop_module
from fastast_cli.training.config import load_config
from fastast_cli.training.loop import Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")

# A tiny AST: 8 batches of 8 clips per epoch on small_demo's fold 1, a few seconds an epoch.
TINY = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16, "epochs": 2,
        "batch_size": 8, "lr": 2e-4, "loss": "ce", "num_workers": 0, "device": "cpu",
        "lr_start": 99}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def tiny(recipe: Path, data: Path, out: Path, **values):
    return load_config(recipe, {"data": str(data), "out": str(out), **values})


@pytest.fixture(scope="module")
def whole_run(small_demo, recipe, tmp_path_factory):
    """The tiny recipe's 2 epochs without a teacher, run once for the module: (its folder, its
    result). Tests read it and never write into it."""
    out = tmp_path_factory.mktemp("whole") / "run"
    return out, train(tiny(recipe, small_demo, out, teacher="none"))


@pytest.fixture(scope="module")
def one_epoch_run(small_demo, recipe, tmp_path_factory) -> Path:
    """The tiny recipe's first epoch, trained once for the module: tests that resume it work
    on a copy (a run folder may be resumed under any --out)."""
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    train(tiny(recipe, small_demo, out, epochs=1))
    return out


def copy_of(manifest: Path, tmp_path: Path) -> Path:
    """A copy of a prepared dataset whose datafiles a test may change; its manifest."""
    root = tmp_path / "data"
    shutil.copytree(manifest.parent, root, ignore=shutil.ignore_patterns("cache"))
    return root / manifest.name


def edit_datafile(manifest: Path, split: str, change) -> Path:
    """Rewrite the fold-1 datafile of `split` as `change(entries)` returns it."""
    path = load_manifest(manifest).datafile(split, 1)
    content = json.loads(path.read_text())
    content["data"] = change(content["data"])
    path.write_text(json.dumps(content))
    return path


# --- 2: a folder holding any run file is a run --------------------------------------------------

def test_a_folder_with_any_run_file_is_refused_unless_resumed_or_overwritten(
        small_demo, recipe, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "best.pt").write_bytes(b"the user's precious model")
    (out / "log.csv").write_text("epoch\n1\n")
    (out / "notes.txt").write_text("mine")
    config = tiny(recipe, small_demo, out, epochs=1)
    with pytest.raises(FastASTError, match=r"already holds a run \(best.pt, log.csv\).*--resume"):
        train(config)
    assert (out / "best.pt").read_bytes() == b"the user's precious model"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "log.csv", "notes.txt"]
    with pytest.raises(FastASTError, match="give one of them"):
        train(config, resume=True, overwrite=True)
    command = ["train-teacher", "--recipe", str(recipe), "--data", str(small_demo), "--out",
               str(out), "--epochs", "1"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "best.pt").read_bytes() == b"the user's precious model"

    distill = ["distill", *command[1:]]  # the same for a student
    result = CliRunner().invoke(app, distill)
    assert result.exit_code == 2 and "already holds a run" in result.output, result.output
    assert (out / "best.pt").read_bytes() == b"the user's precious model"

    result = CliRunner().invoke(app, [*command, "--overwrite"])  # starts over: run files
    assert result.exit_code == 0, result.output  # replaced, the rest left alone
    assert read_checkpoint(out / "best.pt")["meta"]["epoch"] == 1
    assert (out / "log.csv").read_text().splitlines()[0].startswith("epoch,train_loss")
    assert len((out / "log.csv").read_text().splitlines()) == 2
    assert (out / "notes.txt").read_text() == "mine"


# --- 5: Ctrl-C anywhere leaves a resumable last.pt ---------------------------------------------

# Runs `fastast ARGS` with SIGINT sent to itself once, at a chosen point of the run: the first
# validation, or the write of epoch 1's last.pt (a run's second last.pt, after its initial one).
INTERRUPTING = """
import os, signal, sys
from fastast_cli.training import loop
point, args = sys.argv[1], sys.argv[2:]
name = {"validation": "predict_dataset", "last.pt": "save_checkpoint"}[point]
original, calls = getattr(loop, name), []

def interrupting(*positional, **keywords):
    if point == "validation" or positional[0].name == "last.pt":
        calls.append(1)
        if len(calls) == (1 if point == "validation" else 2):
            os.kill(os.getpid(), signal.SIGINT)
    return original(*positional, **keywords)

setattr(loop, name, interrupting)
sys.argv = ["fastast", *args]
from fastast_cli.cli import main
main()
"""


def run_interrupted(point: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", INTERRUPTING, point, *args], timeout=300,
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"},
                          preexec_fn=as_from_a_terminal)


@pytest.mark.parametrize("point", ["validation", "last.pt"])
def test_ctrl_c_during_validation_or_the_checkpoint_write_saves_a_resumable_state(
        small_demo, recipe, whole_run, tmp_path, point):
    whole_out, whole = whole_run
    out = tmp_path / "cut"
    done = run_interrupted(point, ["train-teacher", "--recipe", str(recipe), "--data",
                                   str(small_demo), "--out", str(out)])
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "last.pt" in done.stderr and "--resume" in done.stderr
    progress = read_checkpoint(out / "last.pt")["progress"]
    # Validation of epoch 1 was cut: all its batches done, the epoch not yet counted. The last.pt
    # write of epoch 1 finishes with its log row before the Ctrl-C is taken.
    assert (progress["epoch"], progress["batch"]) == ((0, 8) if point == "validation" else (1, 0))
    resumed = train(tiny(recipe, small_demo, out, teacher="none"), resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert len((out / "log.csv").read_text().splitlines()) == 3
    for name, tensor in read_checkpoint(whole_out / "last.pt")["model"].items():
        assert torch.allclose(tensor, read_checkpoint(out / "last.pt")["model"][name],
                              atol=1e-6), name
    assert resumed.history[-1]["accuracy"] == whole.history[-1]["accuracy"]


def test_ctrl_c_while_the_command_starts_prints_no_traceback():
    script = """
import builtins, sys
real_import = builtins.__import__

def interrupted_import(name, *args, **kwargs):
    if name == "torch":
        raise KeyboardInterrupt  # what Ctrl-C during the slow imports raises
    return real_import(name, *args, **kwargs)

builtins.__import__ = interrupted_import
sys.argv = ["fastast", "sweep", "--help"]  # --help alone needs no torch
from fastast_cli.cli import main
main()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130
    assert "Traceback" not in done.stderr and "interrupted" in done.stderr


# --- 6, 7, 9: the clips are checked before any work ---------------------------------------------

def test_empty_splits_are_refused_before_training_and_evaluating(small_demo, recipe, tmp_path):
    data = copy_of(small_demo, tmp_path)
    edit_datafile(data, "eval", lambda entries: [])
    with pytest.raises(FastASTError, match="the eval split is empty: .*fold1_eval.json"):
        train(tiny(recipe, data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    checkpoint = save_checkpoint(tmp_path / "m.pt", build_model(
        "tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
        labels=load_manifest(data).label_names))
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(checkpoint), "--data",
                                      str(data), "--device", "cpu"])
    assert result.exit_code == 2 and "the eval split is empty" in result.output
    edit_datafile(data, "train", lambda entries: [])
    with pytest.raises(FastASTError, match="the train split is empty"):
        train(tiny(recipe, data, tmp_path / "run"))


def test_missing_audio_is_reported_at_once_with_a_count(small_demo, recipe, tmp_path):
    data = copy_of(small_demo, tmp_path)
    train_file = load_manifest(data).datafile("train", 1)
    listed = [entry["wav"] for entry in json.loads(train_file.read_text())["data"]]
    for wav in listed[-3:]:
        (train_file.parent / wav).unlink()
    with pytest.raises(FastASTError, match=r"3 of 60 audio files listed in .*fold1_train.json "
                                           r"\(train split\) are missing: .*wav"):
        train(tiny(recipe, data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_clip_without_labels_is_an_error_in_training_and_evaluation(
        small_demo, recipe, tmp_path):
    data = copy_of(small_demo, tmp_path)

    def blank_two(entries):
        entries[0]["labels"] = ""
        entries[5]["labels"] = " , "
        return entries

    edit_datafile(data, "eval", blank_two)
    with pytest.raises(FastASTError, match=r"fold1_eval.json: 2 of 20 clips have no labels"):
        train(tiny(recipe, data, tmp_path / "run"))
    checkpoint = save_checkpoint(tmp_path / "m.pt", build_model(
        "tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
        labels=load_manifest(data).label_names))
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(checkpoint), "--data",
                                      str(data), "--device", "cpu"])
    assert result.exit_code == 2 and "2 of 20 clips have no labels" in result.output


def test_sweep_checks_the_clips_it_scores_before_measuring(small_demo, tmp_path, monkeypatch):
    from fastast_cli.evaluation import sweep as sweep_engine

    def measuring(*args, **kwargs):
        raise AssertionError("measured before checking the clips")

    monkeypatch.setattr(sweep_engine, "sweep_throughputs", measuring)
    data = copy_of(small_demo, tmp_path)
    checkpoint = save_checkpoint(tmp_path / "m.pt", build_model(
        "tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
        labels=load_manifest(data).label_names))
    command = ["sweep", "--data", str(data), "--checkpoint", str(checkpoint), "--r", "0,4",
               "--device", "cpu"]
    eval_file = load_manifest(data).datafile("eval", 1)
    first = json.loads(eval_file.read_text())["data"][0]["wav"]
    (eval_file.parent / first).unlink()
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "1 of 20 audio files listed in" in result.output and "are missing" in result.output

    data = copy_of(small_demo, tmp_path / "blank")
    edit_datafile(data, "eval", lambda entries: [{**entries[0], "labels": ""}, *entries[1:]])
    result = CliRunner().invoke(app, [*command[:2], str(data), *command[3:]])
    assert result.exit_code == 2 and "1 of 20 clips have no labels" in result.output

    edit_datafile(data, "eval", lambda entries: [])
    result = CliRunner().invoke(app, [*command[:2], str(data), *command[3:]])
    assert result.exit_code == 2 and "the eval split is empty" in result.output


def test_evaluate_checks_every_folds_clips_before_scoring(small_demo, tmp_path, monkeypatch):
    from fastast_cli.evaluation import evaluate as evaluate_engine

    def scoring(*args, **kwargs):
        raise AssertionError("scored a fold before checking every fold's clips")

    monkeypatch.setattr(evaluate_engine, "predict_dataset", scoring)
    data = copy_of(small_demo, tmp_path)
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=load_manifest(data).label_names)
    for fold in (1, 2):
        save_checkpoint(tmp_path / f"m{fold}.pt", model)
    eval_file = load_manifest(data).datafile("eval", 2)
    first = json.loads(eval_file.read_text())["data"][0]["wav"]
    (eval_file.parent / first).unlink()
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "m{fold}.pt"),
                                      "--data", str(data), "--folds", "1-2", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "fold2_eval.json (eval split) are missing" in " ".join(result.output.split())


# --- 12: logs after a crash, stale temporaries --------------------------------------------------

def test_resume_drops_log_rows_beyond_the_checkpoint_and_stale_temporaries(
        small_demo, recipe, one_epoch_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    after_one = (out / "last.pt").read_bytes()
    train(tiny(recipe, small_demo, out, epochs=2), resume=True)
    # Killed between epoch 2's log row and its last.pt: the log is a row ahead of the state.
    (out / "last.pt").write_bytes(after_one)
    stale = out / ".last.pt.k1ll3d.pt.tmp"
    stale.write_bytes(b"half a checkpoint")
    (out / "my.pt.tmp").write_bytes(b"not ours")
    train(tiny(recipe, small_demo, out, epochs=2), resume=True)
    epochs = [line.split(",")[0] for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert not stale.exists() and (out / "my.pt.tmp").exists()


# --- 13: the teacher's kind comes from its checkpoint ------------------------------------------

def test_teacher_kind_is_taken_from_the_checkpoint_and_must_agree(small_demo, recipe,
                                                                  one_epoch_run, tmp_path):
    teacher = one_epoch_run / "best.pt"
    config = tiny(recipe, small_demo, tmp_path / "student", teacher_checkpoint=str(teacher))
    trainer = Trainer(config, loop_module.Ranks(), torch.device("cpu"),
                      loop_module.SilentReporter())
    assert trainer.teacher is not None and trainer.config.teacher == "ast"
    wrong = tiny(recipe, small_demo, tmp_path / "other", teacher="efficientnet-b2",
                 teacher_checkpoint=str(teacher))
    with pytest.raises(FastASTError, match="holds a ast model: give --teacher ast"):
        train(wrong)
    with pytest.raises(FastASTError, match="teacher none, but a teacher checkpoint"):
        tiny(recipe, small_demo, tmp_path / "none", teacher="none",
             teacher_checkpoint=str(teacher))
    assert tiny(recipe, small_demo, tmp_path / "plain").teacher == "auto"  # → none at run time


# --- 15: recipe values and bases ----------------------------------------------------------------

def test_recipe_values_out_of_range_are_refused_with_the_setting_named(tmp_path):
    recipe = tmp_path / "tiny.yaml"  # a base beside the recipes built on it
    recipe.write_text(yaml.safe_dump(TINY))
    for key, value, message in (("r", -5, "r must be >= 0"), ("mixup", 2.0, "mixup"),
                                ("freqm", -1, "freqm must be >= 0"),
                                ("num_workers", -2, "num_workers"), ("fold", 0, "fold"),
                                ("betas", [0.9, 1.5], "betas")):
        bad = tmp_path / f"{key}.yaml"
        bad.write_text(yaml.safe_dump({"base": str(recipe), key: value}))
        with pytest.raises(FastASTError, match=message):
            load_config(bad, {"data": "d", "out": str(tmp_path)})


def test_a_copied_shipped_recipe_finds_its_base(tmp_path):
    from fastast_cli.training.config import RECIPES_DIR

    copy = tmp_path / "my-distill.yaml"
    shutil.copy(RECIPES_DIR / "demo-distill.yaml", copy)  # base: demo.yaml
    loaded = load_config(copy, {"out": str(tmp_path)})
    assert (loaded.depth, loaded.r, loaded.teacher) == (4, 8, "mobilenetv3-small")
    (tmp_path / "demo.yaml").write_text("depth: 3\n")  # one beside it wins over the shipped one
    assert load_config(copy, {"data": "d", "out": str(tmp_path)}).depth == 3
    missing = tmp_path / "orphan.yaml"
    missing.write_text("base: nowhere.yaml\n")
    with pytest.raises(FastASTError, match="base 'nowhere.yaml' is neither beside it"):
        load_config(missing, {"out": str(tmp_path)})


def test_training_notes_once_when_r_exceeds_what_the_tokens_allow(small_demo, recipe, tmp_path):
    class Notes(loop_module.SilentReporter):
        def __init__(self) -> None:
            self.notes: list[str] = []

        def note(self, message: str) -> None:
            self.notes.append(message)

    notes = {}
    for r in (20, 60):
        reporter = Notes()
        Trainer(tiny(recipe, small_demo, tmp_path / f"r{r}", r=r), loop_module.Ranks(),
                torch.device("cpu"), reporter)
        notes[r] = reporter.notes
    assert notes[20] == []  # 98 tokens → 78 → 58: every block merges its 20
    assert len(notes[60]) == 1 and notes[60][0].startswith(
        "note: r=60 is more than 96 patches allow: block 1 merges only 48 tokens")


def test_a_new_run_writes_its_initial_last_pt_first(small_demo, recipe, tmp_path, monkeypatch):
    """Killed right after its first file, a run folder can still be resumed."""
    out = tmp_path / "run"
    written: list[str] = []
    original = loop_module.write_text

    def record_and_kill(path, text):
        written.extend(sorted(p.name for p in out.iterdir() if p.name != ".fastast.lock"))
        raise SystemExit("killed")  # stands for SIGKILL right after the first file

    monkeypatch.setattr(loop_module, "write_text", record_and_kill)
    with pytest.raises(SystemExit):
        train(tiny(recipe, small_demo, out, epochs=1))
    assert written == ["last.pt"]
    monkeypatch.setattr(loop_module, "write_text", original)
    result = train(tiny(recipe, small_demo, out, epochs=1), resume=True)
    assert [row["epoch"] for row in result.history] == [1]
