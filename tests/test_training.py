"""The training loop: learning, consistent teaching, exact resume, NaN stop, averaging, CLI
(DDP under torchrun: test_ddp.py)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.models.checkpoints import read_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.training import loop as loop_module
from fastast_cli.training.config import (
    TrainConfig,
    load_config,
    process_batch,
    read_recipe,
    warmup_steps_for,
)
from fastast_cli.training.loop import Trainer, TrainingInterrupted, learning_rate, train
from fastast_cli.training.sampling import EpochSampler

# A tiny AST that trains at ~100 samples/s on 2 CPU cores.
TINY_AST = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16}


def config(data: Path, out: Path, **values) -> TrainConfig:
    base = {**TINY_AST, "data": str(data), "out": str(out), "epochs": 2, "batch_size": 8,
            "lr": 2e-4, "loss": "ce", "num_workers": 0, "device": "cpu", "lr_start": 99}
    return TrainConfig(**{**base, **values})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


@pytest.fixture(scope="module")
def one_epoch_run(small_demo, tmp_path_factory) -> Path:
    """The tiny AST's first epoch, trained once for the module: its best.pt is a teacher or
    pretrained weights; tests that resume the run work on a copy (any --out resumes it)."""
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    train(config(small_demo, out, epochs=1))
    return out


def test_tiny_ast_and_tiny_cnn_learn_the_demo_set(demo_data, tmp_path):
    chance = 0.1
    # tiny AST of 2 blocks: 0.36 / 0.44 / 0.55 at epochs 4 / 5 / 6 on a 2-core AMD EPYC;
    # MobileNetV3-small: 0.56 / 0.66 at epochs 3 / 4 (an epoch to spare on other processors)
    ast = train(config(demo_data, tmp_path / "ast", epochs=6))
    cnn = train(config(demo_data, tmp_path / "cnn", model="mobilenetv3-small", epochs=4, lr=1e-3,
                       batch_size=16, freqm=24, timem=48))
    assert ast.best_metric >= 3 * chance, ast.history
    assert cnn.best_metric >= 3 * chance, cnn.history
    assert ast.history[-1]["train_loss"] < ast.history[0]["train_loss"]
    # The best checkpoint reproduces its validation accuracy through `fastast evaluate`.
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "ast/best.pt"),
                                      "--data", str(demo_data), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{ast.best_metric:.4f}" in result.output


def test_resume_after_interruption_gives_the_same_weights(small_demo, tmp_path, monkeypatch):
    whole = config(small_demo, tmp_path / "whole", epochs=2, freqm=8, timem=16, mixup=0.5)
    train(whole)

    class StopInEpochTwo:
        def __init__(self) -> None:
            self.batches = 0

        def epoch_started(self, epoch, epochs, batches):
            pass

        def batch_done(self, loss, lr, speed):
            self.batches += 1
            if self.batches == 11:  # 8 batches per epoch: batch 3 of epoch 2
                raise KeyboardInterrupt

        def epoch_done(self, row):
            pass

        def note(self, message):
            pass

    split = config(small_demo, tmp_path / "split", epochs=2, freqm=8, timem=16, mixup=0.5)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(split, reporter=StopInEpochTwo())
    saved = read_checkpoint(tmp_path / "split/last.pt")["progress"]
    assert (saved["epoch"], saved["batch"]) == (1, 3)
    assert not (tmp_path / "split/summary.json").exists()  # only a complete run has one
    with pytest.raises(FastASTError, match="--resume"):
        train(split)  # never overwrite a run by accident
    train(split, resume=True)
    summary = json.loads((tmp_path / "split/summary.json").read_text())
    assert summary["epochs"] == 2 and summary["last"]["epoch"] == 2
    for name, tensor in weights(tmp_path / "whole/last.pt").items():
        torch.testing.assert_close(weights(tmp_path / "split/last.pt")[name], tensor,
                                   rtol=0, atol=1e-6)
    whole_log = (tmp_path / "whole/log.csv").read_text().splitlines()
    split_log = (tmp_path / "split/log.csv").read_text().splitlines()
    strip = [",".join(line.split(",")[:7]) for line in whole_log]  # without speed and seconds
    assert strip == [",".join(line.split(",")[:7]) for line in split_log]


def test_teacher_is_frozen_and_sees_the_students_augmented_input(small_demo, one_epoch_run,
                                                                tmp_path):
    teacher_path = one_epoch_run / "best.pt"
    student = config(small_demo, tmp_path / "student", epochs=1, teacher="ast",
                     teacher_checkpoint=str(teacher_path), r=4, freqm=24, timem=48)
    trainer = Trainer(student, loop_module.Ranks(), torch.device("cpu"),
                      loop_module.SilentReporter())
    seen: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}
    modes = []
    trainer.model.register_forward_pre_hook(lambda m, a: seen["student"].append(a[0].clone()))

    def teacher_hook(module, args):
        seen["teacher"].append(args[0].clone())
        modes.append((module.training, torch.is_grad_enabled()))

    trainer.teacher.register_forward_pre_hook(teacher_hook)
    before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    trainer.run(resume=False)
    training_steps = len(seen["teacher"])
    assert training_steps == 8
    for student_input, teacher_input in zip(seen["student"], seen["teacher"], strict=False):
        assert torch.equal(student_input, teacher_input)
    assert all(mode == (False, False) for mode in modes)
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    for name, value in trainer.teacher.state_dict().items():
        assert torch.equal(value, before[name])
    assert trainer.model.r_schedule == [4, 4]


def test_cached_teacher_logits_are_computed_once(small_demo, one_epoch_run, tmp_path):
    student = config(small_demo, tmp_path / "student", epochs=2, teacher="ast",
                     teacher_checkpoint=str(one_epoch_run / "best.pt"),
                     teacher_logits="cached", freqm=24, timem=48)
    trainer = Trainer(student, loop_module.Ranks(), torch.device("cpu"),
                      loop_module.SilentReporter())
    calls = []
    trainer.teacher.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    trainer.run(resume=False)
    clips = len(trainer.train_items)
    assert sum(calls) == clips  # one pass over the clean clips, none during the 2 epochs
    cache = torch.load(tmp_path / "student/teacher_logits.pt", weights_only=True)
    clean = trainer._dataset("train", training=False)
    teacher = load_classifier(one_epoch_run / "best.pt")
    with torch.no_grad():
        expected = teacher(torch.stack([clean[i][0] for i in range(clips)]))
    torch.testing.assert_close(cache["logits"], expected, atol=1e-5, rtol=1e-5)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small_demo, tmp_path, monkeypatch):
    run = config(small_demo, tmp_path / "nan", epochs=3)
    real_loss = loop_module.distillation_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * math.nan if calls["n"] == 12 else loss  # batch 4 of epoch 2

    monkeypatch.setattr(loop_module, "distillation_loss", poisoned)
    with pytest.raises(FastASTError, match="nan.*last good epoch"):
        train(run)
    saved = read_checkpoint(tmp_path / "nan/last.pt")
    assert saved["progress"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_weight_averaging_is_the_mean_of_the_epochs(small_demo, tmp_path):
    run = config(small_demo, tmp_path / "avg", epochs=1, average_from=1, average_to=2)
    train(run)
    first = weights(tmp_path / "avg/last.pt")
    result = train(config(small_demo, tmp_path / "avg", epochs=2, average_from=1, average_to=2),
                   resume=True)
    second = weights(tmp_path / "avg/last.pt")
    averaged = weights(tmp_path / "avg/averaged.pt")
    for name in first:
        if first[name].is_floating_point():
            torch.testing.assert_close(averaged[name], (first[name] + second[name]) / 2)
    assert result.averaged_metrics is not None


def test_learning_rate_schedule_matches_ast():
    esc = TrainConfig(lr=1e-5, lr_start=5, lr_step=1, lr_decay=0.85)
    assert [round(learning_rate(esc, e, 0, 0) / 1e-5, 6) for e in range(8)] == [
        1, 1, 1, 1, 1, 0.85, 0.7225, 0.614125]
    audioset = TrainConfig(lr=5e-5, lr_start=10, lr_step=5, lr_decay=0.5, warmup_steps=1000)
    assert warmup_steps_for(audioset, 1700) == 1000
    assert learning_rate(audioset, 0, 0, 1000) == pytest.approx(5e-8)
    assert learning_rate(audioset, 0, 499, 1000) == pytest.approx(2.5e-5)
    assert learning_rate(audioset, 9, 5000, 1000) == pytest.approx(5e-5)
    assert learning_rate(audioset, 10, 5000, 1000) == pytest.approx(2.5e-5)
    assert learning_rate(audioset, 15, 5000, 1000) == pytest.approx(1.25e-5)


class LrRecorder(loop_module.SilentReporter):
    """Keeps the learning rate of every training step."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def batch_done(self, loss: float, lr: float, samples_per_s: float) -> None:
        self.lrs.append(lr)


class NoteRecorder(loop_module.SilentReporter):
    """Keeps the notes a run prints."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def first_epoch_lrs(run: TrainConfig) -> tuple[int, list[float]]:
    """The run's warm-up steps and the lr of each step of its first epoch."""
    recorder = LrRecorder()
    trainer = Trainer(run, loop_module.Ranks(), torch.device("cpu"), recorder)
    trainer._train_epoch(trainer.model)
    return trainer.warmup_steps, recorder.lrs


def test_ast_from_scratch_warms_up_unless_pretrained_or_set(small_demo, one_epoch_run,
                                                           tmp_path):
    # 64 training clips in batches of 8: 8 steps per epoch, 5 epochs → 40 steps, 10%: 4.
    scratch = config(small_demo, tmp_path / "scratch", epochs=5, lr=1e-3)
    assert scratch.from_scratch and scratch.warmup_steps is None
    steps, lrs = first_epoch_lrs(scratch)
    assert steps == 4
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    long_run = TrainConfig(epochs=25, pretrained=None)  # AST's 1000 steps caps a long run
    assert warmup_steps_for(long_run, 1700) == 1000
    assert warmup_steps_for(TrainConfig(model="efficientnet-b2"), 100) == 0  # CNNs: none

    weights_path = one_epoch_run / "best.pt"
    pretrained = config(small_demo, tmp_path / "pretrained", epochs=5, lr=1e-3,
                        pretrained=str(weights_path))
    assert not pretrained.from_scratch
    assert first_epoch_lrs(pretrained) == (0, [1e-3] * 8)
    explicit = config(small_demo, tmp_path / "explicit", epochs=5, lr=1e-3, warmup_steps=2)
    steps, lrs = first_epoch_lrs(explicit)
    assert steps == 2 and lrs[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert warmup_steps_for(config(small_demo, tmp_path, warmup_steps=0), 8) == 0


def test_recipes_chain_and_flags_override(tmp_path):
    values = read_recipe("esc50-tome-kd")
    assert values["teacher"] == "efficientnet-b2" and values["lr"] == 1e-5 and values["r"] == 20
    loaded = load_config("esc50-tome-kd", {"r": 8, "out": str(tmp_path), "lr": None})
    assert loaded.r == 8 and loaded.lr == 1e-5 and loaded.freqm == 24
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: esc50\nlearning_rate: 3\n")
    with pytest.raises(FastASTError, match="unknown setting 'learning_rate'"):
        load_config(bad, {"out": str(tmp_path)})
    with pytest.raises(FastASTError, match="needs --teacher-checkpoint"):
        load_config("esc50", {"teacher": "ast", "out": str(tmp_path)})


def test_distill_command_end_to_end(small_demo, tmp_path):
    runner = CliRunner()
    common = ["--data", str(small_demo), "--epochs", "1", "--device", "cpu", "--num-workers", "0",
              "--batch-size", "8"]
    teacher = runner.invoke(app, ["train-teacher", "--recipe", "demo-teacher", "--out",
                                  str(tmp_path / "t"), *common])
    assert teacher.exit_code == 0, teacher.output
    student = runner.invoke(app, ["distill", "--recipe", "demo-distill", "--out",
                                  str(tmp_path / "s"), "--teacher-checkpoint",
                                  str(tmp_path / "t/best.pt"), "--r", "6", *common])
    assert student.exit_code == 0, student.output
    assert "training ast from scratch (no --pretrained): lr warm-up over the first step" in \
        student.output.replace("\n", " ")
    assert "from scratch" not in teacher.output  # a CNN needs no warm-up
    saved = read_checkpoint(tmp_path / "s/best.pt")
    assert saved["meta"]["r"] == 6 and saved["config"]["depth"] == 4
    assert (tmp_path / "s/config.yaml").read_text().count("teacher: mobilenetv3-small") == 1
    wrong = runner.invoke(app, ["distill", "--recipe", "demo-distill", "--out",
                                str(tmp_path / "w"), "--teacher", "ast", "--teacher-checkpoint",
                                str(tmp_path / "t/best.pt"), *common])
    assert wrong.exit_code == 2 and "holds a mobilenetv3-small model" in wrong.output


def test_global_batch_must_split_across_processes_unless_per_process(small_demo, tmp_path):
    with pytest.raises(FastASTError, match=r"batch_size 5 \(the global batch\) does not split "
                       r"across 2 processes: give a multiple of 2 \(4, 6\), or "
                       r"--per-process-batch"):
        Trainer(config(small_demo, tmp_path / "odd", batch_size=5), loop_module.Ranks(0, 2),
                torch.device("cpu"), loop_module.SilentReporter())
    assert process_batch(config(small_demo, tmp_path, batch_size=12), 4) == 3
    assert process_batch(config(small_demo, tmp_path, batch_size=12,
                                per_process_batch=True), 4) == 12
    assert process_batch(config(small_demo, tmp_path, batch_size=5), 1) == 5


def test_epoch_sampler_shards_are_disjoint_reproducible_and_resumable():
    shards = []
    for rank in (0, 1):
        sampler = EpochSampler(11, seed=3, rank=rank, world=2)
        sampler.set_epoch(4)
        shards.append(list(sampler))
        assert len(sampler) == 6
    assert set(shards[0]) | set(shards[1]) == set(range(11))  # every clip, padded by one repeat
    assert len(set(shards[0]) & set(shards[1])) == 1
    again = EpochSampler(11, seed=3, rank=0, world=2)
    again.set_epoch(4, start=2)
    assert list(again) == shards[0][2:]
    again.set_epoch(5)
    assert list(again) != shards[0]
    crowded = [EpochSampler(3, seed=0, rank=rank, world=8) for rank in range(8)]
    assert all(len(list(sampler)) == len(sampler) == 1 for sampler in crowded)


def test_recipe_values_are_typed_and_validated(tmp_path):
    recipe = tmp_path / "typed.yaml"
    recipe.write_text("base: demo\nlr: 1e-4\nepochs: '3'\nelastic: 'false'\n")
    loaded = load_config(recipe, {"out": str(tmp_path)})
    assert (loaded.lr, loaded.epochs, loaded.elastic) == (1e-4, 3, False)
    for bad, message in (({"schedule": "decr"}, "schedule"), ({"size": "huge"}, "size"),
                         ({"pooling": "max"}, "pooling"), ({"lr_step": 0}, "lr_step"),
                         ({"epochs": "many"}, "not a valid")):
        with pytest.raises(FastASTError, match=message):
            load_config("demo", {"out": str(tmp_path), **bad})


def test_resume_refuses_changed_settings_and_teachers_of_another_shape(small_demo,
                                                                      one_epoch_run, tmp_path):
    shutil.copytree(one_epoch_run, tmp_path / "a")
    with pytest.raises(FastASTError, match="other settings.*depth"):
        train(config(small_demo, tmp_path / "a", epochs=2, depth=3), resume=True)
    # A run without warm-up (saved before the from-scratch default) resumes only without it.
    notes = NoteRecorder()
    train(config(small_demo, tmp_path / "old", epochs=1, warmup_steps=0), reporter=notes)
    assert notes.notes[0].startswith("plan: tiny AST")  # every run starts with its plan
    said = [n for n in notes.notes[1:] if not n.startswith("estimated time")]
    assert said == ["training ast from scratch (no --pretrained) without lr warm-up "
                    "(--warmup-steps 0): a transformer from scratch may stay at chance"]
    with pytest.raises(FastASTError, match="other settings.*warmup_steps"):
        train(config(small_demo, tmp_path / "old", epochs=2), resume=True)
    assert len(train(config(small_demo, tmp_path / "old", epochs=2, warmup_steps=0),
                     resume=True).history) == 2
    from fastast_cli import build_model
    from fastast_cli.models.checkpoints import save_checkpoint

    wrong = save_checkpoint(tmp_path / "wide.pt", build_model("tiny", 10, target_length=512))
    with pytest.raises(FastASTError, match="reads 512 frames"):
        train(config(small_demo, tmp_path / "b", teacher="ast", teacher_checkpoint=str(wrong)))


def test_a_cnn_teacher_made_for_other_fbanks_is_refused_like_an_ast(small_demo, tmp_path):
    """The check asks the teacher's input_spec(), so a CNN (frames and mel bins in its meta)
    is checked too, not only a teacher whose config records them."""
    from fastast_cli.models.checkpoints import save_checkpoint
    from fastast_cli.models.teachers import CNNClassifier, CNNConfig

    manifest = load_manifest(small_demo)
    cnn = CNNClassifier(CNNConfig(10, "mobilenetv3-small", labels=manifest.label_names))
    for name, frames, bins, refused in (("long", 512, 128, "reads 512 frames × 128 bins"),
                                        ("narrow", 200, 64, "reads 200 frames × 64 bins")):
        wrong = save_checkpoint(tmp_path / f"{name}.pt", cnn, target_length=frames,
                                num_mel_bins=bins)
        with pytest.raises(FastASTError, match=refused):
            train(config(small_demo, tmp_path / name, teacher_checkpoint=str(wrong)))
    fitting = save_checkpoint(tmp_path / "fits.pt", cnn, target_length=manifest.target_length,
                              num_mel_bins=manifest.num_mel_bins)
    trainer = Trainer(config(small_demo, tmp_path / "s", teacher_checkpoint=str(fitting)),
                      loop_module.Ranks(), torch.device("cpu"), loop_module.SilentReporter())
    assert trainer.config.teacher == "mobilenetv3-small"
    assert trainer._model_meta()["num_mel_bins"] == manifest.num_mel_bins  # what a CNN reads


def test_train_refuses_a_used_folder_before_the_slow_set_up(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "log.csv").write_text("epoch\n1\n")
    missing_data = tmp_path / "no-such-data"  # loading it would fail, but it is never read
    with pytest.raises(FastASTError, match="already holds a run"):
        train(config(missing_data, used))


def test_compile_wraps_the_training_steps_only(small_demo, tmp_path):
    """--compile: steps run through torch.compile on the model's own parameters; checkpoints
    and evaluation keep using the plain model (nothing is compiled until a step runs)."""
    assert load_config("demo", {"compile": True, "out": str(tmp_path)}).compile
    trainer = Trainer(config(small_demo, tmp_path / "c", compile=True), loop_module.Ranks(),
                      torch.device("cpu"), loop_module.SilentReporter())
    network = trainer._network()
    assert isinstance(network, torch._dynamo.eval_frame.OptimizedModule)
    assert network._orig_mod is trainer.model
    eager = Trainer(config(small_demo, tmp_path / "e"), loop_module.Ranks(),
                    torch.device("cpu"), loop_module.SilentReporter())
    assert eager._network() is eager.model


def test_compile_flag_reaches_both_training_commands(small_demo, tmp_path, monkeypatch):
    import fastast_cli.cli.train as train_cli

    seen = []

    def record(config, **_):
        seen.append(config.compile)
        raise FastASTError("stop before training")

    monkeypatch.setattr(train_cli, "train", record)
    common = ["--data", str(small_demo), "--out", str(tmp_path / "run")]
    for command, flag in (("train-teacher", "--compile"), ("distill", "--compile"),
                          ("distill", "--eager"), ("train-teacher", None)):
        result = CliRunner().invoke(app, [command, *common, *([flag] if flag else [])])
        assert result.exit_code == 2 and "stop before training" in result.output
    assert seen == [True, True, False, False]
