"""ElasticAST wired into the toolkit: native-length data, training, evaluate --lengths."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.data.dataset import NativeLengthDataset
from fastast_cli.data.elastic_features import num_frames_at
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.evaluate import evaluate_checkpoint, evaluate_lengths
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.elastic import ElasticAST
from fastast_cli.training.config import load_config


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
    assert native(manifest, seconds=0.5, fixed_length=True)[0][0].shape == (200, 128)
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
    assert float(rows[0]["metric"]) == pytest.approx(whole.metrics.accuracy, abs=5e-5)


def test_elastic_student_learns_from_a_fixed_teacher_on_padded_clips(small_demo, tmp_path):
    from fastast_cli.data.elastic_features import pad_clips
    from fastast_cli.training.config import TrainConfig
    from fastast_cli.training.loop import Ranks, SilentReporter, Trainer, train

    base = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16,
            "data": str(small_demo), "epochs": 1, "batch_size": 8, "lr": 2e-4, "loss": "ce",
            "num_workers": 0, "device": "cpu"}
    train(TrainConfig(**base, out=str(tmp_path / "teacher")))
    student = TrainConfig(**base, out=str(tmp_path / "student"), elastic=True,
                          resolutions=[1.0, 2.0], max_tokens=256, teacher="ast",
                          teacher_checkpoint=str(tmp_path / "teacher/best.pt"))
    trainer = Trainer(student, Ranks(), torch.device("cpu"), SilentReporter())
    seen = {"student": [], "teacher": []}
    trainer.model.register_forward_pre_hook(lambda m, a: seen["student"].append(a[0]))
    trainer.teacher.register_forward_pre_hook(lambda m, a: seen["teacher"].append(a[0]))
    trainer.run(resume=False)
    pad = -trainer.mean / (2 * trainer.std)
    for clips, batch in zip(seen["student"], seen["teacher"], strict=False):
        assert batch.shape[1] == 200 and any(clip.shape[0] < 200 for clip in clips)
        torch.testing.assert_close(batch, pad_clips(clips, 200, pad))
    assert len(seen["teacher"]) == 8
