"""Hostile values and inputs (issue 20, part A): every number read from a file or a flag is
checked (finite, in range, consistent with its data), audio is bounded from its header before
decoding, lists built from ranges are bounded, YAML/JSON have budgets and refuse duplicate keys,
scores that are not finite are never results, and bad names or links never raise. Each test
class failed before these checks; `TestStillWorks` keeps what worked."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from data_fixtures import no_progress, write_tone  # noqa: F401
from typer.testing import CliRunner

import fastast_cli.data.audio as audio_module
import fastast_cli.training.loop as loop_module
from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.audio import AudioReadError, load_mono, read_audio, set_max_duration
from fastast_cli.data.datafile import read_datafile
from fastast_cli.data.manifest import load_manifest
from fastast_cli.data.prepare import prepare_folder
from fastast_cli.errors import CheckpointError, FastASTError, NonFiniteScores
from fastast_cli.evaluation.metrics import compute_metrics
from fastast_cli.models.checkpoints import read_checkpoint, save_checkpoint
from fastast_cli.models.checkpoints.huggingface import read_hf_folder
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.training.config import TrainConfig, load_config, read_recipe
from fastast_cli.training.loop import train
from fastast_cli.values import MAX_YAML_NODES, load_json, load_yaml

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["dog", "rain", "siren"]
WINDOW = 64


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result, *phrases: str) -> None:
    """Exit 2, one `error:` line naming every phrase, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert "error:" in result.output
    text = " ".join(result.output.split())
    for phrase in phrases:
        assert phrase in text, (phrase, result.output)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hostile") / "tiny.pt"
    save_checkpoint(path, build_model("tiny", 3, target_length=WINDOW, labels=LABELS),
                    mean=-5.0, std=4.0, loss="ce")
    return path


def float_wav(path: Path, peak: float, seconds: float = 0.5, rate: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(int(seconds * rate)) * peak).astype(np.float32)
    sf.write(path, samples, rate, subtype="FLOAT")
    return path


def with_header(source: Path, target: Path, *, rate: int | None = None,
                data_size: int | None = None, riff_size: int | None = None) -> Path:
    """A copy of a PCM WAV with its header's rate (and byte rate) or sizes rewritten."""
    data = bytearray(source.read_bytes())
    if rate is not None:
        block_align = struct.unpack("<H", data[32:34])[0]
        data[24:28] = struct.pack("<I", rate)
        data[28:32] = struct.pack("<I", rate * block_align)
    if riff_size is not None:
        data[4:8] = struct.pack("<I", riff_size)
    if data_size is not None:
        at = data.find(b"data")
        data[at + 4 : at + 8] = struct.pack("<I", data_size)
    target.write_bytes(bytes(data))
    return target


@pytest.fixture()
def dataset(small_demo: Path, tmp_path: Path) -> Path:
    """A writable copy of the small demo set: its manifest path."""
    shutil.copytree(small_demo.parent, tmp_path / "data")
    return tmp_path / "data" / "manifest.yaml"


def edit_manifest(manifest: Path, old: str, new: str) -> None:
    text = manifest.read_text()
    assert old in text, old
    manifest.write_text(text.replace(old, new, 1))


# --- 1. values that are not finite never become results ---------------------------------------

class TestNonFinite:
    def test_huge_float_samples_are_refused_not_scored(self, checkpoint, tmp_path):
        for peak in (1e30, 1e20, 3e6):
            wav = float_wav(tmp_path / f"huge{peak:g}.wav", peak)
            with pytest.raises(AudioReadError, match="beyond"):
                read_audio(wav)
            result = run_cli("predict", str(wav), "--checkpoint", str(checkpoint), "--json",
                             "--device", "cpu")
            assert result.exit_code == 2 and not re.search(r":\s*NaN", result.output)
            assert "beyond" in " ".join(result.output.split())

    def test_prepare_skips_a_huge_clip_and_measures_finite_stats(self, tmp_path):
        for name in ("a", "b"):
            for i in range(3):
                write_tone(tmp_path / "src" / name / f"{i}.wav", seed=i)
        float_wav(tmp_path / "src" / "a" / "huge.wav", 1e30)
        report = prepare_folder(tmp_path / "src", tmp_path / "out")
        assert math.isfinite(report.mean) and math.isfinite(report.std) and report.std > 0
        assert any("huge.wav" in path for path, _ in report.skipped)
        load_manifest(tmp_path / "out")  # the manifest it wrote is valid

    def test_silent_training_clips_give_no_zero_std(self, tmp_path):
        for name in ("a", "b"):
            for i in range(3):
                path = tmp_path / "src" / name / f"{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, np.zeros(8000, np.float32), 16000)
        with pytest.raises(FastASTError, match="std is 0"):
            prepare_folder(tmp_path / "src", tmp_path / "out")

    def test_metrics_of_nan_scores_are_refused(self):
        targets = np.eye(3)[[0, 1, 2, 0]]
        for bad in (math.nan, math.inf, -math.inf):
            scores = np.random.default_rng(0).random((4, 3))
            scores[2, 1] = bad
            with pytest.raises(NonFiniteScores, match="c.wav"):
                compute_metrics(scores, targets, ["a.wav", "b.wav", "c.wav", "d.wav"])

    def test_checkpoint_with_nan_weights_or_stats_is_refused(self, checkpoint, tmp_path):
        payload = read_checkpoint(checkpoint)
        name = next(iter(payload["model"]))
        for label, change in (("nan-weight", ("model", name, math.nan)),
                              ("inf-weight", ("model", name, math.inf)),
                              ("nan-std", ("meta", "std", math.nan)),
                              ("zero-std", ("meta", "std", 0.0)),
                              ("inf-mean", ("meta", "mean", math.inf))):
            broken = read_checkpoint(checkpoint)
            part, key, value = change
            if part == "model":
                broken["model"][key] = broken["model"][key].clone().fill_(value)
            else:
                broken["meta"][key] = value
            path = tmp_path / f"{label}.pt"
            torch.save(broken, path)
            with pytest.raises(CheckpointError, match="damaged"):
                load_classifier(path)
            wav = write_tone(tmp_path / "clip.wav")
            result = run_cli("predict", str(wav), "--checkpoint", str(path), "--device", "cpu")
            one_line_error(result, "damaged")

    def test_predict_never_prints_nan(self, checkpoint, tmp_path, monkeypatch):
        """Even when the model itself overflows, scores that are not finite fail the file."""
        wav = write_tone(tmp_path / "clip.wav")
        model = build_model("tiny", 3, target_length=WINDOW, labels=LABELS)
        with torch.no_grad():
            model.mlp_head[-1].bias.fill_(1e38)
            model.mlp_head[-1].weight.fill_(1e38)
        path = save_checkpoint(tmp_path / "overflow.pt", model, mean=-5.0, std=4.0, loss="ce")
        result = run_cli("predict", str(wav), "--checkpoint", str(path), "--json",
                         "--device", "cpu")
        assert result.exit_code == 2
        assert not re.search(r":\s*-?(NaN|Infinity)", result.output)  # no NaN as a value
        assert "not finite" in " ".join(result.output.split())

    @pytest.mark.parametrize("flag", ["nan", "inf", "-inf", "0", "-1"])
    def test_lr_must_be_finite_and_positive(self, flag):
        with pytest.raises(FastASTError, match="lr"):
            load_config(None, {"lr": float(flag), "data": "d", "out": "o"})

    def test_validation_nan_stops_after_saving_the_epoch(self, small_demo, tmp_path,
                                                           monkeypatch):
        run = TrainConfig(model="ast", size="tiny", depth=1, fstride=16, tstride=16,
                          data=str(small_demo), out=str(tmp_path / "run"), epochs=1,
                          batch_size=16, loss="ce", num_workers=0, device="cpu", cache=False)
        real = loop_module.predict_dataset

        def poisoned(*args, **kwargs):
            logits, targets = real(*args, **kwargs)
            logits[3] = math.nan
            return logits, targets

        monkeypatch.setattr(loop_module, "predict_dataset", poisoned)
        with pytest.raises(FastASTError, match="validation of epoch 1 stopped.*not finite"):
            train(run)
        saved = read_checkpoint(tmp_path / "run/last.pt")
        assert saved["progress"]["epoch"] == 0 and saved["progress"]["batch"] > 0
        monkeypatch.setattr(loop_module, "predict_dataset", real)
        result = train(run, resume=True)  # the saved epoch is validated, not retrained
        assert result.best_epoch == 1 and math.isfinite(result.history[0]["accuracy"])


# --- 2/3. unbounded inputs ----------------------------------------------------------------------

class TestUnbounded:
    def test_a_made_up_sample_rate_is_refused_before_decoding(self, checkpoint, tmp_path):
        source = write_tone(tmp_path / "real.wav", seconds=2.0)
        for rate in (1, 50, 999):
            bomb = with_header(source, tmp_path / f"rate{rate}.wav", rate=rate)
            started = time.monotonic()
            with pytest.raises(AudioReadError, match=f"sample rate {rate} Hz"):
                load_mono(bomb)
            result = run_cli("predict", str(bomb), "--checkpoint", str(checkpoint),
                             "--device", "cpu")
            assert result.exit_code == 2 and "sample rate" in result.output
            assert time.monotonic() - started < 30

    def test_duration_limit_from_the_header_and_max_duration(self, checkpoint, tmp_path):
        wav = write_tone(tmp_path / "three.wav", seconds=3.0)
        result = run_cli("predict", str(wav), "--checkpoint", str(checkpoint), "--device",
                         "cpu", "--max-duration", "2")
        assert result.exit_code == 2 and "--max-duration" in " ".join(result.output.split())
        assert run_cli("predict", str(wav), "--checkpoint", str(checkpoint), "--device",
                       "cpu", "--max-duration", "4").exit_code == 0
        try:
            set_max_duration(2.0)
            with pytest.raises(AudioReadError, match="longer than the limit"):
                read_audio(wav)
        finally:
            set_max_duration(None)
        for bad in ("0", "-1", "nan"):
            one_line_error(run_cli("predict", str(wav), "--checkpoint", str(checkpoint),
                                   "--max-duration", bad), "--max-duration")

    def test_whole_decode_checks_memory_from_the_header(self, tmp_path, monkeypatch):
        wav = write_tone(tmp_path / "clip.wav", seconds=1.0, channels=8, sample_rate=48000)
        monkeypatch.setattr(audio_module, "_memory_bytes", lambda: 1 << 20)
        with pytest.raises(AudioReadError, match="GiB, more than half"):
            read_audio(wav)

    def test_prepare_skips_a_rate_bomb_with_a_line(self, tmp_path):
        for name in ("a", "b"):
            for i in range(3):
                write_tone(tmp_path / "src" / name / f"{i}.wav", seed=i)
        with_header(tmp_path / "src/a/0.wav", tmp_path / "src/a/bomb.wav", rate=1)
        report = prepare_folder(tmp_path / "src", tmp_path / "out")
        assert [Path(p).name for p, _ in report.skipped] == ["bomb.wav"]

    @pytest.mark.parametrize("spec", ["0:1000000000:1", "0:20000", "-1000000000:5:1"])
    def test_sweep_ranges_are_bounded(self, spec):
        started = time.monotonic()
        one_line_error(run_cli("sweep", "--r", spec), "at most")
        assert time.monotonic() - started < 10

    def test_fold_ranges_are_bounded(self, small_demo):
        one_line_error(run_cli("evaluate", "--checkpoint", "x.pt", "--data", str(small_demo),
                               "--folds", "1-1000000000"), "at most")

    def test_yaml_alias_bomb_is_refused_fast(self, tmp_path):
        levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
        for i in range(1, 9):
            levels.append(f"l{i}: &l{i} [" + ", ".join([f"*{'a' if i == 1 else f'l{i - 1}'}"]
                                                        * 10) + "]")
        bomb = "\n".join(levels) + "\nbetas: *l8\n"
        recipe = tmp_path / "bomb.yaml"
        recipe.write_text(bomb)
        started = time.monotonic()
        with pytest.raises(FastASTError, match=f"more than {MAX_YAML_NODES:,}") as error:
            read_recipe(recipe)
        assert time.monotonic() - started < 5 and len(str(error.value)) < 400
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(bomb)
        with pytest.raises(FastASTError, match="more than"):
            load_manifest(manifest)
        # A value formatted in a message is cut short.
        recipe.write_text("betas: [" + ", ".join(["x"] * 5000) + "]\n")
        with pytest.raises(FastASTError) as error:
            read_recipe(recipe) and load_config(recipe, {})
        assert len(str(error.value)) < 400

    def test_hf_config_with_a_million_layers_is_refused(self, tmp_path):
        from fastast_cli.export.hf import export_hf

        model = build_model("tiny", 3, target_length=WINDOW, labels=LABELS)
        folder = tmp_path / "hf"
        export_hf(model, folder)
        config = json.loads((folder / "config.json").read_text())
        for key, value in (("num_hidden_layers", 1_000_000), ("num_hidden_layers", 3),
                           ("hidden_size", 10**9), ("num_attention_heads", True),
                           ("layer_norm_eps", "nan")):
            (folder / "config.json").write_text(json.dumps({**config, key: value}))
            started = time.monotonic()
            with pytest.raises(CheckpointError):
                read_hf_folder(folder)
            assert time.monotonic() - started < 10
        (folder / "config.json").write_text('{"hidden_size": 192, "hidden_size": 64}')
        with pytest.raises(CheckpointError, match="given twice"):
            read_hf_folder(folder)


# --- 4. faults that were tracebacks --------------------------------------------------------------

class TestNoTraceback:
    def test_link_loops_to_predict(self, checkpoint, tmp_path):
        loop = tmp_path / "loop.wav"
        os.symlink(loop.name, loop)
        result = run_cli("predict", str(loop), "--checkpoint", str(checkpoint), "--device", "cpu")
        one_line_error(result, "loop of symbolic links")
        pair_a, pair_b = tmp_path / "a.wav", tmp_path / "b.wav"
        os.symlink(pair_b.name, pair_a)
        os.symlink(pair_a.name, pair_b)
        good = write_tone(tmp_path / "good.wav")
        result = run_cli("predict", str(pair_a), str(good), "--checkpoint", str(checkpoint),
                         "--device", "cpu")
        assert result.exit_code == 0 and "Traceback" not in result.output

    def test_odd_files_in_a_folder_given_to_predict_are_reported(self, checkpoint, tmp_path):
        folder = tmp_path / "in"
        write_tone(folder / "good.wav")
        os.mkfifo(folder / "fifo.wav")
        os.symlink("loop.wav", folder / "loop.wav")
        result = run_cli("predict", str(folder), "--checkpoint", str(checkpoint), "--json",
                         "--device", "cpu")
        assert result.exit_code == 0, result.output
        payload = json.JSONDecoder().raw_decode(result.output[result.output.index("{"):])[0]
        failures = {Path(f["file"]).name: f["error"] for f in payload["failures"]}
        assert set(failures) == {"fifo.wav", "loop.wav"} and len(payload["results"]) == 1
        assert "FIFO" in failures["fifo.wav"] and "loop" in failures["loop.wav"]

    def test_non_utf8_names_and_odd_files_in_a_class_folder_are_logged(self, tmp_path):
        for name in ("a", "b"):
            for i in range(3):
                write_tone(tmp_path / "src" / name / f"{i}.wav", seed=i)
        odd = tmp_path / "src" / "a"
        sf.write(os.fsencode(odd) + b"/caf\xe9.wav", np.zeros(800) + 0.1, 16000)
        os.mkfifo(odd / "fifo.wav")
        (odd / "folder.wav").mkdir()
        os.symlink("loop.wav", odd / "loop.wav")
        os.symlink("/nonexistent/x.wav", odd / "dangling.wav")
        (tmp_path / "src" / "c\udcff").mkdir()  # a class folder whose name is not UTF-8
        sf.write(os.fsencode(tmp_path / "src" / "c\udcff" / "0.wav"), np.zeros(800) + 0.1, 16000)
        report = prepare_folder(tmp_path / "src", tmp_path / "out")
        reasons = {Path(path).name: why for path, why in report.skipped}
        assert set(reasons) == {"caf\\xe9.wav", "fifo.wav", "folder.wav", "loop.wav",
                                "dangling.wav", "c\\xff"}
        assert "not UTF-8" in reasons["caf\\xe9.wav"] and "FIFO" in reasons["fifo.wav"]
        assert "loop" in reasons["loop.wav"] and "folder" in reasons["folder.wav"]
        log = (tmp_path / "out" / "prepare.log").read_text()
        assert "fifo.wav" in log and "caf\\xe9.wav" in log

    def test_non_utf8_recipe_manifest_and_table(self, tmp_path):
        recipe = tmp_path / "r.yaml"
        recipe.write_bytes(b"lr: 1e-4\nmodel: \xff\xfe\n")
        one_line_error(run_cli("train-teacher", "--recipe", str(recipe), "--data", "x",
                               "--out", str(tmp_path / "o")), "UTF-8")
        manifest = tmp_path / "manifest.yaml"
        manifest.write_bytes(b"dataset: \xff\n")
        with pytest.raises(FastASTError, match="UTF-8"):
            load_manifest(manifest)
        table = tmp_path / "sweep.csv"
        table.write_bytes(b"run,r,accuracy\n\xff\xfe,0,1\n")
        one_line_error(run_cli("report", str(table), "--baseline", "a", "--tome", "b",
                               "--r", "8"), "UTF-8")


# --- 5. values nobody checked ------------------------------------------------------------------

class TestValuesChecked:
    @pytest.mark.parametrize(("old", "new", "phrase"), [
        ("target_length: 200", "target_length: -5", "target_length"),
        ("target_length: 200", "target_length: 1e9", "target_length"),
        ("target_length: 200", "target_length: true", "target_length"),
        ("num_mel_bins: 128", "num_mel_bins: 0", "num_mel_bins"),
        ("sample_rate: 16000", "sample_rate: 8000", "sample_rate"),
        ("num_classes: 10", "num_classes: 11", "num_classes"),
        ("default_fold: 1", "default_fold: 9", "default_fold"),
        ("format: 1", "format: .nan", "format"),
    ])
    def test_manifest_numbers(self, dataset, old, new, phrase):
        edit_manifest(dataset, old, new)
        with pytest.raises(FastASTError, match=phrase):
            load_manifest(dataset)

    @pytest.mark.parametrize("std", ["0", "-1.0", ".nan", ".inf", "'abc'"])
    def test_manifest_std(self, dataset, std):
        text = dataset.read_text()
        start = text.index("\nstd: ") + 1
        end = text.index("\n", start)
        dataset.write_text(text[:start] + f"std: {std}" + text[end:])
        with pytest.raises(FastASTError, match="std"):
            load_manifest(dataset)

    def test_checkpoint_meta(self, checkpoint, tmp_path):
        for key, value in (("fold", "1; rm -rf /"), ("fold", 0), ("fold", 1.5),
                           ("target_length", -5), ("epoch", True), ("r", -1),
                           ("data_identity", ["x"])):
            broken = read_checkpoint(checkpoint)
            broken["meta"][key] = value
            path = tmp_path / "meta.pt"
            torch.save(broken, path)
            with pytest.raises(CheckpointError, match=f"meta {key}"):
                load_classifier(path)

    def test_checkpoint_config(self, checkpoint, tmp_path):
        for key, value in (("depth", 10**6), ("depth", True), ("embed_dim", -1),
                           ("mlp_ratio", math.nan), ("qkv_bias", "yes")):
            broken = read_checkpoint(checkpoint)
            broken["config"][key] = value
            path = tmp_path / "config.pt"
            torch.save(broken, path)
            with pytest.raises(CheckpointError, match=key):
                load_classifier(path)

    @pytest.mark.parametrize(("flag", "value", "phrase"), [
        ("--lengths", "0,-1", "--lengths"), ("--lengths", "nan", "--lengths"),
        ("--lengths", "inf", "--lengths"), ("--resolutions", "1000", "--resolutions"),
        ("--resolutions", "0.001", "--resolutions"), ("--resolutions", "nan", "--resolutions"),
        ("--folds", "0-3", "--folds"),
    ])
    def test_evaluate_flags_before_any_work(self, flag, value, phrase, tmp_path):
        # The data and checkpoint do not exist: the flag is refused first.
        one_line_error(run_cli("evaluate", "--checkpoint", "missing.pt", "--data",
                               str(tmp_path / "none"), flag, value), phrase)

    def test_sweep_budget_checked_up_front(self, tmp_path):
        one_line_error(run_cli("sweep", "--r", "0:8:8", "--budget", "2x"), "needs --data")
        for bad in ("-5x", "0", "nanx", "infx", "fast"):
            one_line_error(run_cli("sweep", "--r", "0:8:8", "--budget", bad, "--data",
                                   str(tmp_path / "none"), "--checkpoint", "x.pt"), "--budget")

    @pytest.mark.parametrize(("text", "phrase"), [
        ("epochs: true\n", "epochs"), ("epochs: 2.5\n", "epochs"), ("lr: .nan\n", "lr"),
        ("lr: .inf\n", "lr"), ("r: '3'\nr: 4\n", "given twice"), ("elastic: 2\n", "elastic"),
        ("betas: [0.9, .nan]\n", "betas"), ("resolutions: [1, 1000]\n", "resolutions"),
        ("model: {a: 1}\n", "model"),
    ])
    def test_recipe_values(self, tmp_path, text, phrase):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(text)
        with pytest.raises(FastASTError, match=phrase):
            load_config(recipe, {"data": "d", "out": "o"})

    @pytest.mark.parametrize("base", ["/etc/passwd", "../outside.yaml", "sub/../../x"])
    def test_recipe_base_stays_beside_the_recipe(self, tmp_path, base):
        (tmp_path / "outside.yaml").write_text("lr: 1e-3\n")
        (tmp_path / "recipes").mkdir()
        recipe = tmp_path / "recipes" / "r.yaml"
        recipe.write_text(f"base: {base}\n")
        with pytest.raises(FastASTError, match="beside it"):
            read_recipe(recipe)

    def test_duplicate_keys_and_entries(self, tmp_path):
        with pytest.raises(FastASTError, match="given twice"):
            load_yaml("a: 1\nb: {c: 1, c: 2}\n", "x")
        with pytest.raises(FastASTError, match="given twice"):
            load_json('{"data": [], "data": []}', "x")
        with pytest.raises(FastASTError, match="not JSON"):
            load_json('{"a": NaN}', "x")
        wav = write_tone(tmp_path / "a.wav")
        datafile = tmp_path / "d.json"
        datafile.write_text(json.dumps({"data": [{"wav": "a.wav", "labels": "/m/a"},
                                                 {"wav": str(wav), "labels": "/m/b"}]}))
        with pytest.raises(FastASTError, match="entries 0 and 1"):
            read_datafile(datafile)
        datafile.write_text('{"data": [{"wav": "a.wav", "labels": "/m/a", "labels": "/m/b"}]}')
        with pytest.raises(FastASTError, match="given twice"):
            read_datafile(datafile)

    def test_evaluation_clips_in_the_training_datafile_are_a_leak(self, dataset, tmp_path):
        manifest = load_manifest(dataset)
        train_file, eval_file = manifest.datafile("train"), manifest.datafile("eval")
        rows = json.loads(train_file.read_text())
        leaked = json.loads(eval_file.read_text())["data"][0]
        leaked = {**leaked, "wav": str((eval_file.parent / leaked["wav"]).resolve())}
        train_file.write_text(json.dumps({"data": [*rows["data"], leaked]}))
        run = TrainConfig(model="ast", size="tiny", depth=1, fstride=16, tstride=16,
                          data=str(dataset), out=str(tmp_path / "run"), epochs=1,
                          num_workers=0, device="cpu")
        with pytest.raises(FastASTError, match="also training clips"):
            train(run)
        assert not (tmp_path / "run").exists()


# --- what worked keeps working ------------------------------------------------------------------

class TestStillWorks:
    def test_real_files_of_every_shape(self, checkpoint, tmp_path):
        files = [
            write_tone(tmp_path / "eight.wav", channels=8, sample_rate=48000, seconds=0.3),
            write_tone(tmp_path / "fast.wav", sample_rate=192000, seconds=0.3,
                       subtype="PCM_24"),
            float_wav(tmp_path / "int16scale.wav", 30000.0),  # float samples at int16 scale
        ]
        one = tmp_path / "one.wav"
        sf.write(one, np.array([0.25], np.float32), 16000)
        files.append(one)
        big = with_header(write_tone(tmp_path / "short.wav", seconds=1.0), tmp_path / "4gb.wav",
                          riff_size=0xFFFFFFFF, data_size=0xFFFFFFFF)
        files.append(big)
        for path in files:
            samples, rate = read_audio(path)
            assert samples.shape[1] >= 1 and np.isfinite(samples).all()
        assert read_audio(big)[0].shape[1] == 16000
        result = run_cli("predict", *map(str, files), "--checkpoint", str(checkpoint),
                         "--json", "--device", "cpu")
        assert result.exit_code == 0, result.output
        payload = json.JSONDecoder().raw_decode(result.output[result.output.index("{"):])[0]
        assert len(payload["results"]) == len(files) and not payload["failures"]

    def test_long_files_stream_past_the_whole_decode_limit(self, checkpoint, tmp_path,
                                                         monkeypatch):
        """predict reads in windows: the whole-decode default does not apply to it."""
        monkeypatch.setattr(audio_module, "DEFAULT_MAX_DURATION_S", 1.0)
        wav = write_tone(tmp_path / "long.wav", seconds=2.0)
        with pytest.raises(AudioReadError):
            read_audio(wav)
        result = run_cli("predict", str(wav), "--checkpoint", str(checkpoint), "--device", "cpu")
        assert result.exit_code == 0, result.output

    def test_shipped_recipes_and_a_copied_one_still_load(self, tmp_path):
        from fastast_cli.training.config import RECIPES_DIR

        for recipe in sorted(RECIPES_DIR.glob("*.yaml")):
            read_recipe(recipe)
        copy = tmp_path / "mine.yaml"
        copy.write_text("base: esc50-tome-kd\nlr: 1e-5\nanchor: &x 3\n")
        with pytest.raises(FastASTError, match="anchor"):  # unknown key, as before
            load_config(copy, {"data": "d", "out": "o"})
        copy.write_text("base: esc50-tome-kd\nlr: 1e-5\n")
        assert load_config(copy, {"data": "d", "out": "o"}).lr == 1e-5
