"""`fastast predict`: sliding windows, aggregation, any rate/channels, bad files, scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.features import fbank, normalize
from fastast_cli.inference.clips import (
    input_spec,
    load_predictor,
    predict_files,
    score_kind,
    window_starts,
)
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.teachers import CNNClassifier, CNNConfig

LABELS = ["dog", "rain", "siren", "speech", "engine"]
WINDOW = 64  # frames of the tiny test model (0.64 s)
RATE = 16000


pytestmark = pytest.mark.usefixtures("one_thread")


def samples_for_frames(frames: int) -> int:
    """Samples of a 16 kHz clip whose fbank has exactly `frames` frames (25 ms / 10 ms)."""
    return (frames - 1) * 160 + 400


def tone_clip(samples: int, rate: int = RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A chirp plus noise, [samples] or [samples, channels] (soundfile's layout), float32."""
    rng = np.random.default_rng(seed)
    time = np.arange(samples) / rate
    wave = 0.3 * np.sin(2 * np.pi * (300 + 400 * time) * time) + 0.05 * rng.standard_normal(samples)
    if channels == 1:
        return wave.astype(np.float32)
    gains = np.linspace(1.0, 0.4, channels)
    return (wave[:, None] * gains[None, :]).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("predict") / "tiny.pt"
    model = build_model("tiny", 5, target_length=WINDOW, labels=LABELS)
    save_checkpoint(path, model, mean=-5.0, std=4.0, loss="ce")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-window clip, a short clip and a corrupt file."""
    folder = tmp_path_factory.mktemp("clips")
    paths = {name: folder / f"{name}.wav" for name in ("long", "short", "corrupt")}
    sf.write(paths["long"], tone_clip(samples_for_frames(3 * WINDOW)), RATE, subtype="FLOAT")
    sf.write(paths["short"], tone_clip(RATE // 4, seed=1), RATE, subtype="FLOAT")
    paths["corrupt"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    return paths


def invoke(*args: str):
    return CliRunner().invoke(app, ["predict", *args, "--device", "cpu"])


def test_window_starts() -> None:
    assert window_starts(3 * 64, 64, 32) == [0, 32, 64, 96, 128]
    assert window_starts(40, 64, 32) == [0]  # short clip: one (padded) window
    assert window_starts(64, 64, 32) == [0]
    assert window_starts(100, 64, 32) == [0, 32, 36]  # last window ends at the clip's end
    assert window_starts(200, 64, 100) == [0, 100, 136]


def direct_window_scores(checkpoint: Path, wav: Path, starts: list[int]) -> torch.Tensor:
    """Per-window softmax scores [W, C], computed here from the file without the engine."""
    model = load_classifier(checkpoint)
    data, rate = sf.read(wav, dtype="float32")
    assert rate == RATE and data.ndim == 1
    features = normalize(fbank(torch.from_numpy(data)), -5.0, 4.0)
    batch = torch.stack([features[s : s + WINDOW] for s in starts])
    with torch.no_grad():
        return model(batch).softmax(dim=-1)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_long_file_windows_and_aggregation(checkpoint: Path, clips: dict[str, Path],
                                           how: str) -> None:
    predictor = load_predictor(checkpoint, how=how, batch_size=2)
    assert predictor.hop == WINDOW // 2
    clip = predictor.score_file(clips["long"])
    assert clip.num_windows == 5
    assert clip.starts == [0, 32, 64, 96, 128]
    expected = direct_window_scores(checkpoint, clips["long"], clip.starts)
    torch.testing.assert_close(clip.window_scores, expected, atol=1e-5, rtol=1e-4)
    aggregated = expected.mean(dim=0) if how == "mean" else expected.amax(dim=0)
    torch.testing.assert_close(clip.scores, aggregated, atol=1e-5, rtol=1e-4)


def test_hop_option_sets_window_count(checkpoint: Path, clips: dict[str, Path]) -> None:
    clip = load_predictor(checkpoint, hop_s=0.64).score_file(clips["long"])
    assert clip.starts == [0, 64, 128]


def test_short_clip_is_one_padded_window(checkpoint: Path, clips: dict[str, Path]) -> None:
    clip = load_predictor(checkpoint).score_file(clips["short"])
    assert clip.num_windows == 1
    assert clip.duration_s == pytest.approx(0.25)
    assert float(clip.scores.sum()) == pytest.approx(1.0, abs=1e-5)  # softmax: a CE checkpoint


def test_stereo_44k_matches_converted_mono_16k(checkpoint: Path, tmp_path: Path) -> None:
    stereo = tmp_path / "stereo44k.wav"
    sf.write(stereo, tone_clip(int(1.5 * 44100), rate=44100, channels=2), 44100, subtype="FLOAT")
    data, rate = sf.read(stereo, dtype="float32", always_2d=True)  # [samples, 2]
    mono = torch.from_numpy(data.T.copy()).mean(dim=0)
    converted = tmp_path / "mono16k.wav"
    sf.write(converted, AF.resample(mono, rate, RATE).numpy(), RATE, subtype="FLOAT")

    predictor = load_predictor(checkpoint)
    a, b = predictor.score_file(stereo), predictor.score_file(converted)
    assert a.num_windows == b.num_windows > 1
    assert a.scores.argsort(descending=True).tolist() == b.scores.argsort(descending=True).tolist()
    assert torch.allclose(a.scores, b.scores, atol=1e-3)


def test_bad_file_reported_and_others_scored(checkpoint: Path, clips: dict[str, Path]) -> None:
    run = predict_files(load_predictor(checkpoint),
                        [clips["long"], clips["corrupt"], clips["short"], "missing.wav"])
    assert [Path(c.path).name for c in run.scored] == ["long.wav", "short.wav"]
    assert [Path(f.path).name for f in run.failed] == ["corrupt.wav", "missing.wav"]
    assert "corrupt.wav" in run.failed[0].reason and "not found" in run.failed[1].reason


def test_cli_json_with_a_corrupt_file(checkpoint: Path, clips: dict[str, Path],
                                      tmp_path: Path) -> None:
    out = tmp_path / "out" / "predictions.json"
    result = invoke(str(clips["long"]), str(clips["corrupt"]), str(clips["short"]),
                    "--checkpoint", str(checkpoint), "--json", "--top-k", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload == json.loads(out.read_text())
    assert payload["scores"] == "softmax" and payload["aggregate"] == "mean"
    assert payload["hop_s"] == pytest.approx(0.32) and payload["window_s"] == pytest.approx(0.64)
    long, short = payload["results"]
    assert long["windows"] == 5 and short["windows"] == 1
    assert len(long["top"]) == 3 and {t["label"] for t in long["top"]} <= set(LABELS)
    scores = [t["score"] for t in long["top"]]
    assert scores == sorted(scores, reverse=True)
    assert [Path(f["file"]).name for f in payload["failures"]] == ["corrupt.wav"]
    assert "corrupt.wav" in result.stderr and "cannot decode" in result.stderr


def test_cli_table_output(checkpoint: Path, clips: dict[str, Path]) -> None:
    result = invoke(str(clips["long"]), "--checkpoint", str(checkpoint), "--aggregate", "max")
    assert result.exit_code == 0, result.output
    assert "softmax" in result.stdout and "max over windows" in result.stdout
    assert "5 windows" in result.stdout
    assert sum(label in result.stdout for label in LABELS) == 5  # --top-k 5 by default


def test_cli_all_files_bad_exits_2(checkpoint: Path, clips: dict[str, Path]) -> None:
    result = invoke(str(clips["corrupt"]), "--checkpoint", str(checkpoint))
    assert result.exit_code == 2
    assert "could not score the file" in result.stderr
    assert "Traceback" not in result.output


def test_cli_missing_checkpoint_exits_2(clips: dict[str, Path], tmp_path: Path) -> None:
    result = invoke(str(clips["long"]), "--checkpoint", str(tmp_path / "nope.pt"))
    assert result.exit_code == 2
    assert "no such checkpoint" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_cli_bad_hop_exits_2(checkpoint: Path, clips: dict[str, Path]) -> None:
    result = invoke(str(clips["long"]), "--checkpoint", str(checkpoint), "--hop", "0")
    assert result.exit_code == 2 and "--hop" in result.stderr


def test_sigmoid_and_audioset_stats_without_meta(clips: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    save_checkpoint(path, build_model("tiny", 3, target_length=WINDOW))  # no labels, no meta
    predictor = load_predictor(path)
    assert predictor.kind == "sigmoid"
    assert predictor.labels == ["class 0", "class 1", "class 2"]
    assert predictor.spec.mean == pytest.approx(-4.2677393) and predictor.spec.stats_note
    result = invoke(str(clips["short"]), "--checkpoint", str(path))
    assert result.exit_code == 0, result.output
    assert "AudioSet statistics" in result.stdout and "sigmoid" in result.stdout
    assert "class 0" in result.stdout


def test_cnn_window_from_meta() -> None:
    cnn = CNNClassifier(CNNConfig(4, "mobilenetv3-small"))
    assert input_spec(cnn).target_length == 1024
    cnn.meta = {"target_length": 128, "mean": -6.0, "std": 5.0, "loss": "bce"}
    spec = input_spec(cnn)
    assert (spec.target_length, spec.mean, spec.std, spec.stats_note) == (128, -6.0, 5.0, None)
    assert score_kind(cnn) == "sigmoid"
