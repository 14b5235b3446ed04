"""ElasticAST wired into the toolkit: native-length data, training, evaluate --lengths."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.data.dataset import NativeLengthDataset
from fastast_cli.data.elastic_features import shift_for_resolution
from fastast_cli.data.features import LengthPolicy, num_frames
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.evaluate import evaluate_checkpoint, evaluate_lengths
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.elastic import ElasticAST
from fastast_cli.training.config import load_config


def num_frames_at(samples: int, q: float = 1.0) -> int:
    """Fbank frames of `samples` 16-kHz samples at resolution q."""
    return num_frames(samples, frame_shift_ms=shift_for_resolution(q))


def native(manifest, **options) -> NativeLengthDataset:
    return NativeLengthDataset(manifest.datafile("eval", 1), manifest.labels_csv,
                               target_length=manifest.target_length, mean=-6.5, std=3.9,
                               **options)


def test_native_length_items_follow_length_and_resolution(small_demo):
    manifest = load_manifest(small_demo)
    samples = len(native(manifest).waveform(0))
    assert native(manifest)[0][0].shape == (min(num_frames_at(samples), 200), 128)
    assert native(manifest, seconds=0.5)[0][0].shape == (num_frames_at(8000), 128)
    assert native(manifest, resolutions=(2.0, 2.0), seconds=1.0)[0][0].shape == (
        num_frames_at(16000, 2), 128)
    assert native(manifest, seconds=0.5, length=LengthPolicy.fixed(200))[0][0].shape == (
        200, 128)
    training = native(manifest, resolutions=(1.0, 4.0), training=True)
    torch.manual_seed(0)
    lengths = {training[0][0].shape[0] for _ in range(12)}
    assert len(lengths) > 3 and max(lengths) <= 200  # q drawn per item


def test_elastic_run_trains_saves_and_evaluates(small_demo, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, [
        "train-teacher", "--recipe", "demo", "--data", str(small_demo), "--out",
        str(tmp_path / "el"), "--elastic", "--resolutions", "1,2", "--max-tokens", "256",
        "--epochs", "1", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    model = load_classifier(tmp_path / "el/best.pt")
    assert isinstance(model, ElasticAST) and model.max_tokens == 256
    manifest = load_manifest(small_demo)
    whole = evaluate_checkpoint(tmp_path / "el/best.pt", manifest)
    rows = evaluate_lengths(model, manifest, [None, 0.5], [1.0, 2.0])
    assert [(row["length"], row["resolution"]) for row in rows] == [
        ("full", 1.0), ("full", 2.0), ("0.5", 1.0), ("0.5", 2.0)]
    assert rows[0]["accuracy"] == pytest.approx(whole.metrics.accuracy)
    table = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "el/best.pt"),
                                "--data", str(small_demo), "--lengths", "0.5,full",
                                "--resolutions", "1,2", "--out", str(tmp_path / "ev")])
    assert table.exit_code == 0, table.output
    assert len((tmp_path / "ev/lengths.csv").read_text().splitlines()) == 5


def test_elastic_needs_an_ast_student(tmp_path):
    with pytest.raises(FastASTError, match="elastic training"):
        load_config("demo-teacher", {"elastic": True, "out": str(tmp_path)})
    with pytest.raises(FastASTError, match="resolutions"):
        load_config("demo", {"elastic": True, "resolutions": [3.0, 1.0], "out": str(tmp_path)})


@pytest.fixture(scope="module")
def elastic_checkpoint(small_demo, tmp_path_factory):
    from fastast_cli.models.checkpoints import save_checkpoint
    from fastast_cli.models.elastic import build_elastic

    manifest = load_manifest(small_demo)
    torch.manual_seed(0)
    model = build_elastic("tiny", 10, depth=2, target_length=200, labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    path = tmp_path_factory.mktemp("elastic") / "elastic.pt"
    return save_checkpoint(path, model, mean=mean, std=std, loss="ce", metric="accuracy")


def test_predict_reads_short_clips_at_their_own_length(elastic_checkpoint, tmp_path):
    import soundfile as sf

    from fastast_cli.data.elastic_features import elastic_features
    from fastast_cli.inference.clips import load_predictor

    wave = torch.randn(8000).numpy() * 0.1  # 0.5 s: 48 frames, well under the 200-frame window
    sf.write(tmp_path / "short.wav", wave, 16000)
    predictor = load_predictor(elastic_checkpoint)
    scores = predictor.score_file(tmp_path / "short.wav")
    model = load_classifier(elastic_checkpoint)
    clip = elastic_features(wave, 16000, mean=model.meta["mean"], std=model.meta["std"])
    with torch.no_grad():
        expected = model([clip]).softmax(-1)[0]
    assert scores.num_windows == 1
    torch.testing.assert_close(scores.scores, expected, atol=1e-5, rtol=1e-5)


def test_sweep_runs_on_an_elastic_checkpoint(small_demo, elastic_checkpoint, tmp_path):
    import csv

    out = tmp_path / "sweep.csv"
    result = CliRunner().invoke(app, [
        "sweep", "--data", str(small_demo), "--checkpoint", f"el={elastic_checkpoint}",
        "--r", "0,4", "--runs", "1", "--warmup", "0", "--batch-size", "2", "--device", "cpu",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [int(row["tokens"]) for row in rows] == [98, 98 - 2 * 4]
    whole = evaluate_checkpoint(elastic_checkpoint, load_manifest(small_demo))
    assert float(rows[0]["accuracy"]) == pytest.approx(whole.metrics.accuracy, abs=5e-5)


def test_elastic_student_teaches_a_fixed_teacher_the_q1_view_of_each_clip(small_demo, tmp_path):
    from fastast_cli.training.config import TrainConfig
    from fastast_cli.training.loop import Ranks, SilentReporter, Trainer, train

    base = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16,
            "data": str(small_demo), "epochs": 1, "batch_size": 8, "lr": 2e-4, "loss": "ce",
            "num_workers": 0, "device": "cpu"}
    train(TrainConfig(**base, out=str(tmp_path / "teacher")))
    student = TrainConfig(**base, out=str(tmp_path / "student"), elastic=True,
                          resolutions=[1.0, 2.0], max_tokens=256, teacher="ast",
                          teacher_checkpoint=str(tmp_path / "teacher/best.pt"), freqm=8,
                          timem=20)
    trainer = Trainer(student, Ranks(), torch.device("cpu"), SilentReporter())
    seen = {"student": [], "teacher": []}
    trainer.model.register_forward_pre_hook(lambda m, a: seen["student"].append(a[0]))
    trainer.teacher.register_forward_pre_hook(lambda m, a: seen["teacher"].append(a[0]))
    trainer.run(resume=False)
    pad = -trainer.mean / (2 * trainer.std)
    lengths = set()
    for clips, batch in zip(seen["student"], seen["teacher"], strict=False):
        assert batch.shape[1:] == (200, 128)
        for clip, view in zip(clips, batch, strict=True):
            lengths.add(clip.shape[0])
            if clip.shape[0] > 150:  # q = 1: the view is the student's clip, padded as AST pads
                padded = torch.nn.functional.pad(clip, (0, 0, 0, 200 - len(clip)), value=pad)
                torch.testing.assert_close(view, padded)
            else:  # q = 2: half the frames; the teacher still reads the q = 1 clip
                assert view.shape[0] == 200 and not torch.equal(view[: clip.shape[0]], clip)
    assert len(seen["teacher"]) == 8
    assert lengths == {198, 99}  # 2-s clips at q = 1 and q = 2 only (discrete q)


def test_teacher_view_masks_the_same_stretch_of_audio(small_demo):
    manifest = load_manifest(small_demo)
    data = native(manifest, resolutions=(2.0, 2.0), training=True, freqm=20, timem=100,
                  teacher_length=200)
    torch.manual_seed(3)
    features, _, view = data[0]
    pad = (0 - data.mean) / (2 * data.std)
    masked_time = (features == pad).all(dim=1).nonzero()[:, 0]  # the student's time mask
    masked_freq = (features == pad).all(dim=0).nonzero()[:, 0]
    assert len(masked_time) > 0 and len(masked_freq) > 0
    assert (view[:, masked_freq] == pad).all()  # the same frequency band
    start, stop = int(masked_time[0]) * 2, (int(masked_time[-1]) + 1) * 2
    assert (view[start:stop] == pad).all()  # the same seconds, at q = 1
    assert not (view[stop + 2 : stop + 6] == pad).all()


def test_time_mask_scales_with_the_clip_length_and_resolution(small_demo):
    manifest = load_manifest(small_demo)
    full = native(manifest, timem=48, training=True)
    assert full.time_mask_width(200) == 48 and full.time_mask_width(50) == 12
    short = native(manifest, resolutions=(4.0, 4.0), seconds=1.0, timem=48, training=True)
    torch.manual_seed(0)
    widths = []
    for _ in range(40):
        features = short[0][0]
        widths.append(int((features == (0 - short.mean) / (2 * short.std)).all(dim=1).sum()))
    frames = short[0][0].shape[0]  # 1 s at q = 4: 25 frames
    assert frames == 25 and max(widths) <= round(48 * 25 / 200) < frames


def test_resolutions_are_drawn_from_whole_steps_by_default():
    from fastast_cli.data.elastic_features import draw_resolution

    generator = torch.Generator().manual_seed(0)
    drawn = {draw_resolution(1.0, 4.0, generator, discrete=True) for _ in range(200)}
    assert drawn == {1.0, 2.0, 3.0, 4.0}
    continuous = {draw_resolution(1.0, 4.0, generator) for _ in range(50)}
    assert len(continuous) == 50 and all(1.0 <= q <= 4.0 for q in continuous)
    from fastast_cli.training.config import TrainConfig

    assert TrainConfig().resolution_sampling == "discrete" and TrainConfig().token_dropout == 0.1
    assert TrainConfig().resolutions == [1.0, 4.0]  # ElasticAST's q ∈ {1, 2, 3, 4}


def test_token_dropout_drops_patches_in_training_only():
    from fastast_cli.models.elastic import build_elastic

    torch.manual_seed(0)
    model = build_elastic("tiny", 10, depth=2, target_length=400)
    model.token_dropout = 0.1
    clips = [torch.randn(400, 128), torch.randn(160, 128)]
    tokens = model.embed(clips)
    counts = [model.num_tokens(clip) for clip in clips]  # 2 + 8 × 25, 2 + 8 × 10
    torch.manual_seed(1)
    kept, kept_counts = model.drop_tokens(tokens, counts)
    assert len(kept) == sum(kept_counts) and all(k < n for k, n in zip(kept_counts, counts,
                                                                       strict=True))
    dropped = 1 - (sum(kept_counts) - 4) / (sum(counts) - 4)
    assert 0.03 < dropped < 0.2
    torch.testing.assert_close(kept[:2], tokens[:2])  # CLS and DIST of clip 0 stay
    start = kept_counts[0]
    torch.testing.assert_close(kept[start : start + 2], tokens[counts[0] : counts[0] + 2])
    model.eval()
    with torch.no_grad():
        first, second = model(clips), model(clips)
    torch.testing.assert_close(first, second)  # no dropout in evaluation
    model.train()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    model(clips)
    assert seen[0] < sum(counts)


def test_resume_with_token_dropout_draws_what_the_uninterrupted_run_drew(small_demo, tmp_path):
    """Token dropout draws from each step's own seed (seed, step, rank), so a run stopped in
    epoch 2 and resumed ends with the weights of the run never stopped (one thread: several
    make ElasticAST's CPU backward add in varying order)."""
    from fastast_cli.models.checkpoints import read_checkpoint
    from fastast_cli.training.config import TrainConfig
    from fastast_cli.training.loop import TrainingInterrupted, train
    from fastast_cli.training.reporting import SilentReporter

    settings = dict(model="ast", size="tiny", depth=2, fstride=16, tstride=16,
                    data=str(small_demo), epochs=2, batch_size=8, lr=2e-4, loss="ce",
                    num_workers=0, device="cpu", lr_start=99, elastic=True,
                    resolutions=[1.0, 2.0], max_tokens=256, token_dropout=0.1)

    class StopInEpochTwo(SilentReporter):
        batches = 0

        def batch_done(self, loss, lr, speed):
            StopInEpochTwo.batches += 1
            if StopInEpochTwo.batches == 11:  # 8 batches per epoch: batch 3 of epoch 2
                raise KeyboardInterrupt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(**settings, out=str(tmp_path / "whole")))
        split = TrainConfig(**settings, out=str(tmp_path / "split"))
        with pytest.raises(TrainingInterrupted):
            train(split, reporter=StopInEpochTwo())
        train(split, resume=True)
    finally:
        torch.set_num_threads(threads)
    whole = read_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    resumed = read_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
