"""The Python API runs a checkpoint as the command line does: `load_model` merges as the run
trained, `features` is predict's input, and the README's API examples run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from fastast_cli import build_model, features, load_model
from fastast_cli.cli import app
from fastast_cli.data.datafile import read_datafile
from fastast_cli.data.manifest import load_manifest
from fastast_cli.inference import clips as clips_module
from fastast_cli.inference.clips import load_predictor, predict_files
from fastast_cli.models.ast import model_size

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def merged_run(small_demo, tmp_path_factory) -> Path:
    """best.pt of a tiny AST trained with ToMe at r = 4 (proportional attention off)."""
    root = tmp_path_factory.mktemp("api")
    recipe = root / "tiny.yaml"
    recipe.write_text("base: demo\ndepth: 2\nepochs: 1\ndevice: cpu\nlr_start: 99\n")
    result = CliRunner().invoke(app, ["distill", "--recipe", str(recipe), "--data",
                                      str(small_demo), "--out", str(root / "run"),
                                      "--teacher", "none", "--r", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "run" / "best.pt"


@pytest.fixture(scope="module")
def long_clip(small_demo, tmp_path_factory) -> tuple[Path, np.ndarray, int]:
    """Three demo clips end to end, stereo: several windows, channels mixed."""
    entries = read_datafile(load_manifest(small_demo).datafile("eval"))[:3]
    wave = np.concatenate([sf.read(str(e.wav))[0] for e in entries])
    stereo = np.stack([wave, 0.5 * wave], axis=1)
    path = tmp_path_factory.mktemp("clip") / "long.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    stereo, rate = sf.read(str(path))  # as a user reads it
    return path, stereo, rate


def test_load_model_merges_as_trained_and_set_r_keeps_its_attention(merged_run):
    model = load_model(merged_run)
    assert model.r_schedule == [4, 4]
    assert model.proportional_attention is False
    assert model.merge_settings.describe() == (
        "ToMe r=4 constant, proportional attention off (from the checkpoint)")
    assert model.set_r(8).proportional_attention is False and model.r_schedule == [8, 8]
    assert model.set_r(8, proportional_attention=True).proportional_attention is True
    assert load_model(merged_run, r=0).r_schedule == [0, 0]


def test_load_model_gives_the_scores_of_fastast_predict_json(merged_run, long_clip):
    path, stereo, rate = long_clip
    result = CliRunner().invoke(app, ["predict", str(path), "--checkpoint", str(merged_run),
                                      "--json", "--top-k", "10"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)["results"][0]
    model = load_model(merged_run)
    x = features(stereo, rate, model)
    assert x.shape[0] == printed["windows"] > 1
    with torch.inference_mode():
        scores = model(x).softmax(-1).mean(0)
    for entry in printed["top"]:
        assert scores[entry["index"]].item() == pytest.approx(entry["score"], abs=1e-6)
    with torch.inference_mode():  # the merging matters: r = 0 scores differently
        plain = load_model(merged_run, r=0)(x).softmax(-1).mean(0)
    assert not torch.allclose(plain, scores, atol=1e-4)


def test_features_is_the_input_predict_gives_the_model(merged_run, long_clip, monkeypatch):
    path, stereo, rate = long_clip
    seen: list[torch.Tensor] = []
    score_inputs = clips_module.Predictor.score_inputs

    def spy(self, inputs):
        seen.extend(inputs)
        return score_inputs(self, inputs)

    monkeypatch.setattr(clips_module.Predictor, "score_inputs", spy)
    predict_files(load_predictor(merged_run), [path])  # the streamed path of `fastast predict`
    model = load_model(merged_run)
    torch.testing.assert_close(features(stereo, rate, model), torch.stack(seen),
                               atol=1e-5, rtol=1e-5)


def test_build_model_takes_what_a_user_writes():
    assert model_size("ast") == "base" and model_size("AST-small") == "small"
    model = build_model("ast-tiny", num_classes=11)  # "ast" itself: the README test builds it
    assert (model.config.embed_dim, model.config.num_classes) == (192, 11)
    assert build_model("tiny", labels=["a", "b"]).config.num_classes == 2
    with pytest.raises(ValueError, match="unknown AST size 'efficientnet-b2'"):
        build_model("efficientnet-b2")
    with pytest.raises(TypeError, match="first argument is the model size"):
        build_model(11)


def readme_api_blocks() -> list[str]:
    """The ```python blocks of the README's "Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_api_examples_run_as_written(merged_run, long_clip, tmp_path, capsys):
    blocks = readme_api_blocks()
    assert blocks and "load_model(\"runs/kd/best.pt\")" in blocks[0]
    (tmp_path / "runs" / "kd").mkdir(parents=True)
    shutil.copy(merged_run, tmp_path / "runs" / "kd" / "best.pt")
    shutil.copy(long_clip[0], tmp_path / "clip.wav")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "ToMe r=4 constant, proportional attention off" in printed
    assert namespace["fresh"].config.num_classes == 11
    model = namespace["model"]
    assert model.r_schedule == [40, 0] and model.proportional_attention is False
