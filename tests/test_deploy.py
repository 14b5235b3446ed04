"""Deploying what trains best: ElasticAST exports at one length, and the ONNX feature recipe
that rebuilds `fastast predict` without fastast."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.export import hf
from fastast_cli.export.onnx_export import read_metadata
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.elastic import ElasticAST

ort = pytest.importorskip("onnxruntime")
LABELS = ["dog", "rain", "siren", "speech"]
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "onnx_predict.py"

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return " ".join(result.output.split())


def tiny_ast(seed: int = 0, frames: int = 128):
    torch.manual_seed(seed)
    return build_model("tiny", len(LABELS), target_length=frames, depth=2, labels=LABELS).eval()


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ElasticAST checkpoint (clips up to 256 frames) that merges 10 % of each clip's
    patches per block."""
    model = ElasticAST.from_ast(tiny_ast(), target_length=256)
    path = tmp_path_factory.mktemp("elastic") / "elastic.pt"
    save_checkpoint(path, model, mean=-3.5, std=4.25,
                    merging={"r": 0.1, "schedule": "constant", "proportional_attention": True,
                             "method": "tome"})
    return path


def test_elastic_onnx_export_at_chosen_frames_matches_the_elastic_model(elastic: Path,
                                                                        tmp_path: Path) -> None:
    model = load_classifier(elastic)
    assert model.r_fraction == 0.1  # the checkpoint's merging is what is exported
    out = tmp_path / "elastic-96.onnx"
    result = invoke("export", str(elastic), "--frames", "96", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "96 frames every 10 ms" in " ".join(result.output.split())
    meta = read_metadata(out)
    patches = (128 // 16) * (96 // 16)  # 48 patches: round(0.1 × 48) = 5 merged per block
    assert (meta["frames"], meta["architecture"], meta["r_schedule"]) == (96, "elastic", [5, 5])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        clips = torch.randn(batch, 96, 128, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            expected = model(list(clips))
        got = torch.from_numpy(session.run(["logits"], {"fbank": clips.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert model.token_counts(2 + patches)[-1] == 2 + patches - 10  # merging really ran

    coarse = tmp_path / "elastic-q2.onnx"
    assert invoke("export", str(elastic), "--frames", "200", "--resolution", "2", "--out",
                  str(coarse)).exit_code == 0
    meta = read_metadata(coarse)
    assert (meta["frame_shift_ms"], meta["fbank_arguments"]["frame_shift"]) == (20.0, 20.0)
    assert (meta["resolution"], meta["hop_samples"]) == (2.0, 320)

    line = one_error_line(invoke("export", str(elastic), "--out", str(tmp_path / "x.onnx")))
    assert "--frames N" in line and "16 to 256" in line
    line = one_error_line(invoke("export", str(elastic), "--frames", "400", "--out",
                                 str(tmp_path / "y.onnx")))
    assert "--frames 400" in line and "256 frames" in line
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_elastic_hf_export_is_its_exact_fixed_ast(elastic: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    result = invoke("export", str(elastic), "--format", "hf", "--frames", "96", "--out",
                    str(tmp_path / "hf"))
    assert result.exit_code == 0, result.output
    theirs = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "hf").eval()
    assert (theirs.config.max_length, theirs.config.time_stride) == (96, 16)
    ours = load_classifier(elastic, 0)  # the folder holds the model without merging
    clips = torch.randn(3, 96, 128, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        torch.testing.assert_close(theirs(clips).logits, ours(list(clips)), atol=1e-4, rtol=0)

    line = one_error_line(invoke("export", str(elastic), "--format", "hf", "--frames", "96",
                                 "--resolution", "2", "--out", str(tmp_path / "q2")))
    assert "--format onnx --resolution 2" in line
    monkeypatch.setattr(hf, "largest_gap", lambda model, fixed: 0.5)  # were it not exact
    line = one_error_line(invoke("export", str(elastic), "--format", "hf", "--frames", "96",
                                 "--out", str(tmp_path / "inexact")))
    assert "not exactly a transformers AST" in line and "--format onnx --frames 96" in line
    assert not (tmp_path / "q2").exists() and not (tmp_path / "inexact").exists()


def speech_clip(folder: Path) -> Path:
    """Real speech (espeak-ng), 22.05 kHz: resampled and read in several windows."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "The first hour with your own recordings: "
                    "a dog barks, then the rain starts."], check=True, capture_output=True)
    return path


def predict_scores(checkpoint: Path, clip: Path, *args: str) -> dict:
    result = invoke("predict", str(clip), "--checkpoint", str(checkpoint), "--json",
                    "--top-k", str(len(LABELS)), *args)
    assert result.exit_code == 0, result.output
    text = result.output
    return json.loads(text[text.index("{\n"): text.rindex("}") + 1])["results"][0]


def run_script(onnx_file: Path, *clips: Path) -> list[dict]:
    """examples/onnx_predict.py in a fresh interpreter that must never import fastast_cli."""
    check = (
        "import runpy, sys\n"
        f"sys.argv = {[str(SCRIPT), str(onnx_file), *map(str, clips)]!r}\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "assert not [m for m in sys.modules if m.startswith('fastast_cli')], 'fastast imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          cwd=onnx_file.parent, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_onnx_recipe_alone_reproduces_predict_on_real_speech_and_a_tiny_clip(
        tmp_path: Path) -> None:
    model = tiny_ast(seed=3)
    with torch.no_grad():
        model.mlp_head[1].weight.mul_(20)  # confident logits: scores far apart
    checkpoint = tmp_path / "ce.pt"
    save_checkpoint(checkpoint, model, mean=-5.0, std=4.0, loss="ce")
    onnx_file = tmp_path / "model.onnx"
    for kind in ("onnx", "hf"):  # a fixed AST takes its own length only
        line = one_error_line(invoke("export", str(checkpoint), "--format", kind, "--frames",
                                     "64", "--out", str(tmp_path / f"64-{kind}")))
        assert "input of an ElasticAST" in line and "takes 128 frames" in line
    assert invoke("export", str(checkpoint), "--r", "6", "--out", str(onnx_file)).exit_code == 0
    meta = read_metadata(onnx_file)
    assert meta["score_activation"] == "softmax" and meta["window_type"] == "hanning"
    assert (meta["frame_length_ms"], meta["frame_shift_ms"], meta["window_frames"],
            meta["hop_frames"], meta["min_samples"]) == (25.0, 10.0, 128, 64, 400)

    speech = speech_clip(tmp_path)
    tiny = tmp_path / "tiny.wav"  # 0.02 s: shorter than one 25-ms frame
    sf.write(tiny, 0.3 * np.sin(np.arange(320) / 5.0), 16000, subtype="PCM_16")
    got = run_script(onnx_file, speech, tiny)
    for clip, ours in zip((speech, tiny), got, strict=True):
        expected = predict_scores(checkpoint, clip, "--r", "6")
        assert ours["windows"] == expected["windows"]
        assert [label for label, _ in ours["top"]] == [t["label"] for t in expected["top"]]
        for item in expected["top"]:
            assert ours["scores"][item["label"]] == pytest.approx(item["score"], abs=1e-5)
    assert got[0]["windows"] == 6 and got[1]["windows"] == 1
    spread = max(got[0]["scores"].values()) - min(got[0]["scores"].values())
    assert spread > 0.2  # scores far apart: a wrong recipe would not match by chance
