"""How the teacher teaches: replayed augmented views (`teacher_views`) equal online teaching on
the view the student sees, are resumable, kept in the run folder and rebuilt when stale; a
PaSST teacher reads the student's augmented clip as audio through its own front end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastast_cli import build_model
from fastast_cli.data.audio import load_mono
from fastast_cli.data.augment import fit_length, mix_waveforms
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.models.checkpoints import read_checkpoint, save_checkpoint
from fastast_cli.models.classifiers import build_classifier, load_classifier
from fastast_cli.training import loop as loop_module
from fastast_cli.training import teacher as teacher_module
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.loop import Trainer, TrainingInterrupted, train
from fastast_cli.training.losses import teacher_targets
from fastast_cli.training.provenance import data_record

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16}


def config(data: Path, out: Path, **values) -> TrainConfig:
    base = {**TINY, "data": str(data), "out": str(out), "epochs": 2, "batch_size": 8,
            "lr": 2e-4, "loss": "ce", "num_workers": 0, "device": "cpu", "lr_start": 99,
            "freqm": 24, "timem": 48, "mixup": 0.5}
    return TrainConfig(**{**base, **values})


def tiny_teacher(path: Path, data: Path, seed: int = 0) -> Path:
    manifest = load_manifest(data)
    torch.manual_seed(seed)
    model = build_model("tiny", manifest.num_classes, target_length=manifest.target_length,
                        depth=2, fstride=16, tstride=16, labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    return save_checkpoint(path, model, mean=mean, std=std, metric="accuracy",
                           **data_record(manifest, None))


def student(data: Path, out: Path, teacher_file: Path, **values) -> Trainer:
    run = config(data, out, **{"teacher": "ast", "teacher_checkpoint": str(teacher_file),
                               **values})
    return Trainer(run, loop_module.Ranks(), torch.device("cpu"), loop_module.SilentReporter())


def record_teaching(trainer: Trainer) -> list[tuple]:
    """(student input, taught predictions, clip indices, views) of every training step."""
    steps: list[tuple] = []
    real = trainer._teacher_targets

    def recorded(fbank, mix, teacher_view=None, view=None):
        taught = real(fbank, mix, teacher_view, view)
        steps.append((fbank.clone(), taught, mix.index.clone(), view.clone()))
        return taught

    trainer._teacher_targets = recorded  # type: ignore[method-assign]
    return steps


@pytest.fixture(scope="module")
def replayed_run(small_demo, tmp_path_factory):
    """A 2-epoch student run taught from 2 replayed views, trained once for the module with its
    teaching recorded: (teacher file, trainer, teacher batch sizes, recorded steps)."""
    folder = tmp_path_factory.mktemp("replayed")
    teacher_file = tiny_teacher(folder / "teacher.pt", small_demo)
    trainer = student(small_demo, folder / "replay", teacher_file, teacher_views=2)
    calls: list[int] = []
    trainer.teacher.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    steps = record_teaching(trainer)
    trainer.run(resume=False)
    return teacher_file, trainer, calls, steps


def test_replayed_views_are_online_teaching_on_the_view_the_student_sees(small_demo,
                                                                        replayed_run):
    teacher_file, trainer, calls, steps = replayed_run
    clips = len(trainer.train_items)
    assert sum(calls) == 2 * clips  # the two views of every clip, once; none in training
    teacher = load_classifier(teacher_file)
    seen: dict[tuple[int, int], torch.Tensor] = {}
    replays = 0
    for fbank, taught, index, view in steps:
        with torch.no_grad():  # the teacher online on the very batch the student trained on
            online = teacher_targets(teacher(fbank), "ce", 1.0)
        torch.testing.assert_close(taught, online, atol=1e-5, rtol=1e-5)
        for item, (clip, k) in enumerate(zip(index.tolist(), view.tolist(), strict=True)):
            if (clip, k) in seen:  # a view replayed in another epoch is that very input
                assert torch.equal(seen[clip, k], fbank[item])
                replays += 1
            seen[clip, k] = fbank[item]
    assert replays > 0  # epoch 2 replays the view of epoch 1 for some clips
    assert {k for _, k in seen} == {0, 1}
    assert sum((clip, 1 - k) in seen for clip, k in seen) > 0  # clips seen in both views
    saved = torch.load(trainer.out / "teacher_views.pt", weights_only=True)
    assert saved["logits"].shape == (2, clips, trainer.manifest.num_classes)
    assert saved["record"]["teacher"].startswith("sha256:")
    assert saved["record"]["augmentation"]["mixup"] == 0.5
    assert not list(small_demo.parent.rglob("teacher_views*"))  # never in the dataset


def test_replay_resumes_with_the_same_weights_and_without_the_teacher(small_demo, replayed_run,
                                                                     tmp_path):
    teacher_file, whole, _, _ = replayed_run  # the uninterrupted run

    class StopInEpochTwo(loop_module.SilentReporter):
        batches = 0

        def batch_done(self, loss, lr, speed):
            self.batches += 1
            if self.batches == 11:
                raise KeyboardInterrupt

    run = config(small_demo, tmp_path / "split", teacher="ast",
                 teacher_checkpoint=str(teacher_file), teacher_views=2)
    with pytest.raises(TrainingInterrupted):
        train(run, reporter=StopInEpochTwo())
    again = Trainer(run, loop_module.Ranks(), torch.device("cpu"), loop_module.SilentReporter())
    calls = []
    again.teacher.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    again.run(resume=True)
    assert calls == []  # the stored views are reused
    expected = read_checkpoint(whole.out / "last.pt")["model"]
    for name, tensor in read_checkpoint(tmp_path / "split/last.pt")["model"].items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6)


def test_views_interrupted_midway_resume_and_stale_views_are_rebuilt(small_demo, tmp_path,
                                                                     monkeypatch):
    teacher_file = tiny_teacher(tmp_path / "teacher.pt", small_demo)
    trainer = student(small_demo, tmp_path / "run", teacher_file, teacher_views=3, epochs=1)
    notes: list[str] = []
    trainer.reporter.note = notes.append  # type: ignore[method-assign]
    real = teacher_module.teacher_logits_of
    computed: list[int | None] = []

    def second_view_interrupted(teacher, inputs, *args):
        computed.append(inputs.view)
        if len(computed) == 2:
            raise KeyboardInterrupt
        return real(teacher, inputs, *args)

    monkeypatch.setattr(teacher_module, "teacher_logits_of", second_view_interrupted)
    first = trainer._replayed_views  # the views alone, not the training
    with pytest.raises(KeyboardInterrupt):
        first()
    assert torch.load(tmp_path / "run/teacher_views.pt", weights_only=True)["logits"].shape[0] == 1
    computed.clear()
    monkeypatch.setattr(teacher_module, "teacher_logits_of",
                        lambda teacher, inputs, *a: computed.append(inputs.view)
                        or real(teacher, inputs, *a))
    views = first()
    assert computed == [1, 2] and views.logits.shape[0] == 3  # view 0 was kept
    # another teacher file (other weights, same path) or other augmentation: rebuilt
    tiny_teacher(teacher_file, small_demo, seed=1)
    computed.clear()
    trainer._replayed_views()
    assert computed == [0, 1, 2] and any("rebuilding" in note for note in notes)
    computed.clear()
    other = student(small_demo, tmp_path / "run", teacher_file, teacher_views=3, epochs=1,
                    freqm=12)
    other._replayed_views()
    assert computed == [0, 1, 2]
    computed.clear()
    other._replayed_views()
    assert computed == []  # current now


def test_a_replayed_view_that_differs_from_the_stored_one_is_refused(small_demo, tmp_path):
    teacher_file = tiny_teacher(tmp_path / "teacher.pt", small_demo)
    trainer = student(small_demo, tmp_path / "run", teacher_file, teacher_views=1, epochs=1)
    views = trainer._replayed_views()
    views.partner[0] = (views.partner[0] + 1) % len(views.partner[0])
    trainer.replayed = views
    with pytest.raises(FastASTError, match="not the view the teacher's logits were computed on"):
        trainer._train_epoch(trainer._network())


def test_teacher_views_flag_and_its_range(small_demo, tmp_path):
    from typer.testing import CliRunner

    from fastast_cli.cli import app

    result = CliRunner().invoke(app, ["distill", "--data", str(small_demo), "--out",
                                      str(tmp_path / "x"), "--teacher-views", "-1"])
    assert result.exit_code == 2
    with pytest.raises(FastASTError, match="teacher_views must be >= 0"):
        config(small_demo, tmp_path, teacher_views=-1).check()


# --- a PaSST teacher on its own front end ----------------------------------------------------


class HeardEnough(Exception):
    """Stops a run once the steps a test checks have run."""


def test_a_passt_teacher_hears_the_students_mixed_clip_at_32_khz(small_demo, tmp_path):
    """A released PaSST state dict teaches on its own front end: each step it reads the audio
    of the student's items, mixed with the same partner and λ, at 32 kHz."""
    pytest.importorskip("hear21passt")
    manifest = load_manifest(small_demo)
    torch.manual_seed(0)
    released = build_classifier("passt", manifest.label_names, target_length=96)
    torch.save(released.net.state_dict(), tmp_path / "passt.pt")  # PaSST's own names
    trainer = student(small_demo, tmp_path / "student", tmp_path / "passt.pt", epochs=1,
                      mixup=1.0, teacher="passt")
    assert trainer.teacher.config.front_end == "passt"
    heard = []

    def hear(module, args):
        if len(heard) == 2:  # two steps are checked below: the run stops at the third
            raise HeardEnough
        heard.append(args[0].clone())

    trainer.teacher.register_forward_pre_hook(hear)
    mixes = []
    real = trainer._teacher_targets
    trainer._teacher_targets = lambda fbank, mix, *rest: (  # type: ignore[method-assign]
        mixes.append(mix) or real(fbank, mix, *rest))
    with pytest.raises(HeardEnough):
        trainer.run(resume=False)
    dataset = trainer.train_items.dataset
    assert heard[0].shape == (8, 96 * 320)  # 96 hops of 10 ms at 32 kHz
    for audio, mix in zip(heard[:2], mixes[:2], strict=True):
        for item in range(len(audio)):
            index, partner = int(mix.index[item]), int(mix.partner[item])
            first = load_mono(dataset.entries[index].wav, 32000)
            second = load_mono(dataset.entries[partner].wav, 32000)
            expected = fit_length(mix_waveforms(first, second, float(mix.lam[item])), 96 * 320)
            torch.testing.assert_close(audio[item], expected)


def test_passt_weights_for_other_classes_are_refused_as_a_teacher(small_demo, tmp_path):
    pytest.importorskip("hear21passt")
    torch.manual_seed(0)
    torch.save(build_classifier("passt", ["a", "b", "c"], target_length=96).net.state_dict(),
               tmp_path / "passt.pt")
    with pytest.raises(FastASTError, match="predict 3 classes.*fine-tune them first"):
        student(small_demo, tmp_path / "student", tmp_path / "passt.pt", teacher="passt")
