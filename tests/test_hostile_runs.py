"""Hostile conditions for runs, signals, writes and deployment: SIGTERM/SIGHUP taken like
Ctrl-C, two processes on one output, resuming on other data, a full disk or a read-only file
system, a sweep resumed in another process, an ONNX file of other weights, a Hugging Face folder
re-imported."""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from signal_defaults import as_from_a_terminal
from typer.testing import CliRunner

from fastast_cli import atomic, build_model
from fastast_cli.atomic import is_temporary
from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.data.prepare.workspace import Workspace
from fastast_cli.inference.scores import score_kind
from fastast_cli.locks import FOLDER_LOCK, folder_lock, output_lock
from fastast_cli.models.checkpoints import files as checkpoint_files
from fastast_cli.models.checkpoints import load_model, read_checkpoint, save_checkpoint
from fastast_cli.training.config import load_config
from fastast_cli.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"model": "ast", "size": "tiny", "depth": 2, "fstride": 16, "tstride": 16, "epochs": 2,
        "batch_size": 8, "lr": 2e-4, "loss": "ce", "num_workers": 0, "device": "cpu",
        "lr_start": 99}
UMASK_MODE = 0o666 & ~atomic._UMASK  # what open() gives a new file


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def tiny(recipe: Path, data: Path, out: Path, **values):
    return load_config(recipe, {"data": str(data), "out": str(out), **values})


@pytest.fixture(scope="module")
def whole_run(small_demo, recipe, tmp_path_factory):
    """The tiny recipe's 2 epochs run without interruption, once for the module:
    (its folder, its result). Tests read it and never write into it."""
    out = tmp_path_factory.mktemp("whole") / "run"
    return out, train(tiny(recipe, small_demo, out))


@pytest.fixture(scope="module")
def one_epoch_run(small_demo, recipe, tmp_path_factory) -> Path:
    """The tiny recipe's first epoch, trained once for the module: tests that resume it work
    on a copy (`copy_run`), since a run folder may be resumed under any --out."""
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    train(tiny(recipe, small_demo, out, epochs=1))
    return out


def copy_run(run: Path, out: Path) -> Path:
    shutil.copytree(run, out)
    return out


def invoke(*args: str):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def one_line_error(result, *parts: str) -> None:
    """Exit 2, one `error:` line holding every part, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    joined = " ".join(result.output.split())  # rich may wrap the line
    for part in parts:
        assert part in joined, result.output


# --- signals: SIGTERM and SIGHUP save and exit like Ctrl-C -------------------------------------

# Runs `fastast ARGS` and sends itself SIGNAL at its 3rd training step (mid-epoch) or in its first
# validation; the signal arrives from outside the Python code, as a scheduler's would.
STOPPING = """
import os, signal, sys
from fastast_cli.training import loop
signum, point, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
name = {"batch": "_step", "group": "_step", "validation": "_evaluate"}[point]
original, calls = getattr(loop.Trainer, name), []

def stopping(self, *positional, **keywords):
    calls.append(1)
    if len(calls) == (1 if point == "validation" else 3):
        if point == "group":  # as Slurm does: the process and its loader workers
            os.killpg(0, signum)
        else:
            os.kill(os.getpid(), signum)
    return original(self, *positional, **keywords)

setattr(loop.Trainer, name, stopping)
sys.argv = ["fastast", *args]
from fastast_cli.cli import main
main()
"""


def run_stopped(signum: int, point: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", STOPPING, str(int(signum)), point, *args],
                          timeout=300, capture_output=True, text=True, start_new_session=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"},
                          preexec_fn=as_from_a_terminal)


@pytest.mark.parametrize(("signum", "point", "code", "saved", "workers"), [
    (signal.SIGTERM, "batch", 143, (0, 3), 0),  # the step under way finishes, then the save
    (signal.SIGHUP, "validation", 129, (0, 8), 0),
    (signal.SIGTERM, "group", 143, (0, 3), 2),  # the loader's workers get it too
])
def test_sigterm_and_sighup_save_the_state_and_resume_exactly(
        small_demo, recipe, whole_run, tmp_path, signum, point, code, saved, workers):
    whole_out, whole = whole_run
    out = tmp_path / "cut"
    done = run_stopped(signum, point, ["train-teacher", "--recipe", str(recipe), "--data",
                                       str(small_demo), "--out", str(out), "--num-workers",
                                       str(workers)])
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert signal.Signals(signum).name in done.stderr
    assert "last.pt" in done.stderr and "--resume" in done.stderr
    progress = read_checkpoint(out / "last.pt")["progress"]
    assert (progress["epoch"], progress["batch"]) == saved
    assert not [path for path in out.iterdir() if path.name.endswith(".tmp")]
    resumed = train(tiny(recipe, small_demo, out, num_workers=workers), resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    for name, tensor in read_checkpoint(whole_out / "last.pt")["model"].items():
        assert torch.allclose(tensor, read_checkpoint(out / "last.pt")["model"][name],
                              atol=1e-6), name
    assert resumed.history[-1]["accuracy"] == whole.history[-1]["accuracy"]


def test_sigterm_of_prepare_leaves_no_temporary_and_the_rerun_finishes(tmp_path):
    script = """
import os, signal, sys
from fastast_cli.data import audio
original, calls = audio.sf.write, []

def stopping(*positional, **keywords):
    calls.append(1)
    if len(calls) == 5:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(*positional, **keywords)

audio.sf.write = stopping
sys.argv = ["fastast", "prepare", "demo", "--out", sys.argv[1], "--clips-per-class", "5",
            "--quiet"]
from fastast_cli.cli import main
main()
"""
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-c", script, str(out)], timeout=300,
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 143, done.stderr
    assert "Traceback" not in done.stderr and "SIGTERM" in done.stderr
    assert not [path for path in out.rglob("*.tmp")]
    again = invoke("prepare", "demo", "--out", out, "--clips-per-class", "5", "--quiet")
    assert again.exit_code == 0, again.output
    assert load_manifest(out).label_names


def test_a_rerun_of_prepare_removes_what_a_killed_one_left(tmp_path):
    out = tmp_path / "data"
    (out / "audio_16k" / "dog").mkdir(parents=True)
    (out / "datafiles").mkdir()
    left = [out / "audio_16k" / "dog" / ".1-100.wav.k3j_x9a2.wav.tmp",
            out / "datafiles" / ".train.json.abcd1234.json.tmp",
            out / ".manifest.yaml.zz99yy88.yaml.tmp"]
    for path in left:
        path.write_bytes(b"")  # what SIGKILL leaves: mkstemp's empty file
    mine = [out / "audio_16k" / "dog" / ".notes.tmp", out / "datafiles" / "keep.json.tmp",
            out / "audio_16k" / "dog" / "1-100.wav"]
    for path in mine:
        path.write_bytes(b"mine")
    Workspace.open(out, "folder", 100)
    assert not any(path.exists() for path in left)
    assert all(path.read_bytes() == b"mine" for path in mine)
    assert is_temporary(Path(".x.wav.abcdefgh.wav.tmp")) and not is_temporary(Path(".x.tmp"))


# --- one process per run folder and per sweep table ---------------------------------------------

def test_a_run_folder_in_use_is_refused_with_one_line(small_demo, recipe, one_epoch_run,
                                                      tmp_path):
    out = copy_run(one_epoch_run, tmp_path / "run")
    log = (out / "log.csv").read_text()
    args = ["train-teacher", "--recipe", recipe, "--data", small_demo, "--out", out,
            "--epochs", "2"]
    with folder_lock(out):  # another process resuming it
        one_line_error(invoke(*args, "--resume"), f"--out {out} is in use by another fastast "
                       f"process (pid {os.getpid()})")
        one_line_error(invoke(*args, "--overwrite"), "in use by another fastast process")
        fresh = tmp_path / "fresh"
        with folder_lock(fresh):  # a fresh start racing another one into the same folder
            one_line_error(invoke(*args[:-4], "--out", fresh), "in use")
            assert [path.name for path in fresh.iterdir()] == [FOLDER_LOCK]
    assert (out / "log.csv").read_text() == log  # no duplicated rows
    assert not (out / FOLDER_LOCK).exists() and not fresh.exists()
    assert invoke(*args, "--resume").exit_code == 0
    assert not (out / FOLDER_LOCK).exists()
    assert [row["epoch"] for row in csv.DictReader((out / "log.csv").open())] == ["1", "2"]


def test_a_lock_is_taken_by_only_one_holder_and_freed_by_its_death(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom fastast_cli.locks import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)",
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match=f"pid {holder.pid}"), folder_lock(out):
            pass
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel frees the lock
        holder.wait()
    with folder_lock(out):  # the left lock file is taken over
        fd = os.open(out / FOLDER_LOCK, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


def test_a_sweep_table_in_use_is_refused(small_demo, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "m.pt", build_model(
        "tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
        labels=load_manifest(small_demo).label_names))
    out = tmp_path / "sweep.csv"
    with output_lock(out):
        one_line_error(invoke("sweep", "--data", small_demo, "--checkpoint", checkpoint,
                              "--r", "0", "--out", out, "--runs", "1", "--warmup", "0"),
                       f"sweep --out {out} is in use by another fastast process")
        one_line_error(invoke("sweep", "--model", "tiny", "--r", "0", "--out", out, "--runs",
                              "1", "--warmup", "0", "--batch-size", "1"), "in use")
    assert not out.exists() and not list(tmp_path.glob(".*lock"))


# --- resume only on the run's own data ----------------------------------------------------------

def test_resume_on_other_data_is_refused_and_moved_data_resumes(small_demo, recipe,
                                                                one_epoch_run, tmp_path):
    out = copy_run(one_epoch_run, tmp_path / "run")
    before = (out / "last.pt").read_bytes()
    other = tmp_path / "other"
    shutil.copytree(small_demo.parent, other, ignore=shutil.ignore_patterns("cache"))
    datafile = load_manifest(other / "manifest.yaml").datafile("eval", 1)
    content = json.loads(datafile.read_text())
    content["data"] = content["data"][1:]  # one evaluation clip fewer: another partition
    datafile.write_text(json.dumps(content))
    args = ["train-teacher", "--recipe", recipe, "--out", out, "--epochs", "2", "--resume"]
    one_line_error(invoke(*args, "--data", other), "was trained on other data",
                   "resume with the run's own --data")
    assert (out / "last.pt").read_bytes() == before
    assert read_checkpoint(out / "last.pt")["meta"]["data_identity"] == load_manifest(
        small_demo).identity
    moved = tmp_path / "moved"
    shutil.copytree(small_demo.parent, moved)
    result = invoke(*args, "--data", moved)
    assert result.exit_code == 0, result.output


# --- where the feature cache lives --------------------------------------------------------------

def test_the_feature_cache_is_never_written_into_the_dataset(small_demo, recipe, tmp_path,
                                                            monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(small_demo.parent, data, ignore=shutil.ignore_patterns("cache"))
    monkeypatch.delenv("FASTAST_CACHE_DIR", raising=False)
    train(tiny(recipe, data, tmp_path / "run", epochs=1))
    assert not (data / "cache").exists()
    assert len(list((tmp_path / "run" / "cache").rglob("*.npy"))) == 80  # 60 train + 20 eval clips
    shared = tmp_path / "shared"
    monkeypatch.setenv("FASTAST_CACHE_DIR", str(shared))
    train(tiny(recipe, data, tmp_path / "run2", epochs=1))
    assert len(list((shared / "features").rglob("*.npy"))) == 80
    assert not (tmp_path / "run2" / "cache").exists()
    train(tiny(recipe, data, tmp_path / "run3", epochs=1, cache_dir=str(data / "cache")))
    assert (data / "cache").is_dir()  # the user named it
    (tmp_path / "a-file").write_text("x")
    result = invoke("train-teacher", "--recipe", recipe, "--data", data, "--out",
                    tmp_path / "run4", "--cache-dir", tmp_path / "a-file" / "cache")
    one_line_error(result, "the feature cache (--cache-dir)", "a-file is a file")
    assert not (tmp_path / "run4").exists()


def test_a_read_only_dataset_trains(small_demo, recipe, tmp_path, monkeypatch):
    """The dataset folder refuses every write (root ignores chmod, so writes are failed)."""
    data = (tmp_path / "data").resolve()
    shutil.copytree(small_demo.parent, data, ignore=shutil.ignore_patterns("cache"))
    real_mkstemp = atomic.tempfile.mkstemp

    def read_only(*args, **kwargs):
        if Path(kwargs["dir"]).resolve().is_relative_to(data):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    monkeypatch.delenv("FASTAST_CACHE_DIR", raising=False)
    result = train(tiny(recipe, data, tmp_path / "run", epochs=1))
    assert [row["epoch"] for row in result.history] == [1]


# --- a full disk or a read-only file system: one line, the earlier file kept -------------------

def fail_replace(monkeypatch, code: int, names: tuple[str, ...] = ()) -> None:
    """atomic writes of files named in `names` (all when empty) fail with `code`."""
    real = atomic.os.replace

    def replace(source, target):
        if not names or Path(target).name in names:
            raise OSError(code, os.strerror(code))
        return real(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)


def test_a_full_disk_at_the_first_file_of_a_run_leaves_no_folder(small_demo, recipe, tmp_path,
                                                                 monkeypatch):
    real_save = torch.save

    def full(payload, file, *args, **kwargs):  # torch's own words for a full disk
        real_save(payload, file, *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576")

    monkeypatch.setattr(checkpoint_files.torch, "save", full)
    monkeypatch.setattr(atomic, "_full", lambda folder: True)
    out = tmp_path / "run"
    result = invoke("train-teacher", "--recipe", recipe, "--data", small_demo, "--out", out)
    one_line_error(result, f"cannot write {out / 'last.pt'}: the disk is full")
    assert not out.exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_a_failed_checkpoint_write_mid_run_keeps_the_last_one(small_demo, recipe,
                                                              one_epoch_run, tmp_path,
                                                              monkeypatch, code):
    out = copy_run(one_epoch_run, tmp_path / "run")
    before = (out / "last.pt").read_bytes()
    fail_replace(monkeypatch, code, ("last.pt",))
    result = invoke("train-teacher", "--recipe", recipe, "--data", small_demo, "--out", out,
                    "--epochs", "2", "--resume")
    one_line_error(result, f"cannot write {out / 'last.pt'}: {atomic.WRITE_FAILURES[code]}",
                   "the earlier last.pt is kept")
    assert (out / "last.pt").read_bytes() == before
    assert not [path for path in out.iterdir() if path.name.endswith(".tmp")]


def test_a_full_disk_while_appending_the_log_is_one_line(small_demo, recipe, tmp_path,
                                                         monkeypatch):
    from fastast_cli.training import run_folder

    monkeypatch.setattr(run_folder.csv, "DictWriter", _full_writer)
    out = tmp_path / "run"
    result = invoke("train-teacher", "--recipe", recipe, "--data", small_demo, "--out", out,
                    "--epochs", "1")
    one_line_error(result, f"cannot write {out / 'log.csv'}: the disk is full")


def _full_writer(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def checkpoint(small_demo, tmp_path_factory) -> Path:
    manifest = load_manifest(small_demo)
    torch.manual_seed(0)
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=manifest.label_names)
    mean, std = manifest.norm_stats()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, mean=mean, std=std,
                           loss="ce", metric="accuracy")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_evaluate_and_predict_outputs_that_fail_are_one_line(small_demo, checkpoint, tmp_path,
                                                             monkeypatch, code):
    fail_replace(monkeypatch, code)
    wav = next(load_manifest(small_demo).root.rglob("*.wav"))
    reason = atomic.WRITE_FAILURES[code]
    one_line_error(invoke("evaluate", "--checkpoint", checkpoint, "--data", small_demo,
                          "--out", tmp_path / "eval", "--device", "cpu"), reason)
    assert not (tmp_path / "eval").exists()  # no empty folder left behind
    one_line_error(invoke("predict", wav, "--checkpoint", checkpoint, "--out",
                          tmp_path / "p.csv", "--device", "cpu"), reason)
    one_line_error(invoke("sweep", "--model", "tiny", "--r", "0", "--out", tmp_path / "s.csv",
                          "--runs", "1", "--warmup", "0", "--batch-size", "1"), reason)


def test_a_read_only_output_file_is_refused_before_any_scoring(small_demo, checkpoint, tmp_path,
                                                               monkeypatch):
    from fastast_cli.cli import predict as predict_module

    wav = next(load_manifest(small_demo).root.rglob("*.wav"))
    out = tmp_path / "p.csv"
    out.write_text("mine\n")
    out.chmod(0o444)
    monkeypatch.setattr(predict_module, "load_predictor",
                        lambda *a, **k: pytest.fail("scored before the output was checked"))
    one_line_error(invoke("predict", wav, "--checkpoint", checkpoint, "--out", out),
                   f"--out {out} is read-only (mode 444)")
    one_line_error(invoke("predict", wav, "--checkpoint", checkpoint, "--timeline", out),
                   "read-only")
    assert out.read_text() == "mine\n"


# --- deployment: ONNX of other weights, HF folders ---------------------------------------------

def test_an_onnx_file_of_other_weights_is_refused(small_demo, checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx_file = tmp_path / "m.onnx"
    assert invoke("export", checkpoint, "--format", "onnx", "--out", onnx_file).exit_code == 0
    assert stat.S_IMODE(onnx_file.stat().st_mode) == UMASK_MODE
    torch.manual_seed(1)  # same shape, same labels, other weights
    other = save_checkpoint(tmp_path / "other.pt", build_model(
        "tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
        labels=load_manifest(small_demo).label_names), **read_checkpoint(checkpoint)["meta"])
    wav = next(load_manifest(small_demo).root.rglob("*.wav"))
    args = ["--backend", "onnxruntime", "--onnx", onnx_file, "--device", "cpu"]
    one_line_error(invoke("predict", wav, "--checkpoint", other, *args),
                   f"{onnx_file} was exported from other weights than this checkpoint")
    one_line_error(invoke("evaluate", "--checkpoint", other, "--data", small_demo, *args),
                   "exported from other weights")
    assert invoke("predict", wav, "--checkpoint", checkpoint, *args).exit_code == 0


@pytest.mark.parametrize(("loss", "kind", "problem"), [
    ("ce", "softmax", "single_label_classification"),
    ("bce", "sigmoid", "multi_label_classification"),
])
def test_an_hf_folder_keeps_the_loss_and_the_umask_mode(checkpoint, tmp_path, loss, kind,
                                                        problem):
    source = save_checkpoint(tmp_path / "m.pt", load_model(checkpoint),
                             **{**read_checkpoint(checkpoint)["meta"], "loss": loss})
    folder = tmp_path / "hf"
    assert invoke("export", source, "--format", "hf", "--out", folder).exit_code == 0
    assert json.loads((folder / "config.json").read_text())["problem_type"] == problem
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == UMASK_MODE, path
    again = load_model(folder)
    assert score_kind(again) == kind == score_kind(load_model(source))


def test_an_hf_folder_on_a_full_disk_is_not_left_half_written(checkpoint, tmp_path,
                                                               monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    monkeypatch.setattr(atomic, "_full", lambda folder: True)
    folder = tmp_path / "hf"
    one_line_error(invoke("export", checkpoint, "--format", "hf", "--out", folder),
                   "the disk is full")
    assert list(tmp_path.iterdir()) == []


def test_every_atomic_writer_gives_the_umask_mode(tmp_path):
    import numpy as np
    import safetensors.torch

    writers = {
        "a.safetensors": lambda tmp: safetensors.torch.save_file({"x": torch.ones(2)}, str(tmp)),
        "a.npy": lambda tmp: np.save(str(tmp), np.ones(2)),
        "a.txt": lambda tmp: tmp.write_text("x"),
    }
    for name, write in writers.items():
        with atomic.atomic_path(tmp_path / name, suffix=Path(name).suffix) as tmp:
            write(tmp)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == UMASK_MODE, name
    save_checkpoint(tmp_path / "c.pt", build_model("tiny", 2, target_length=64, depth=1))
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == UMASK_MODE


# --- a resumed sweep: one timing loop for every row ---------------------------------------------

def test_a_resumed_sweep_times_its_kept_rows_again(small_demo, checkpoint, tmp_path):
    out = tmp_path / "sweep.csv"
    args = ["sweep", "--data", small_demo, "--checkpoint", f"a={checkpoint}", "--out", out,
            "--runs", "2", "--warmup", "1", "--batch-size", "2"]
    assert invoke(*args, "--r", "0,8").exit_code == 0
    rows = list(csv.DictReader(out.open()))
    for row in rows:  # as if timed by another process on a machine 1000× faster
        row["samples_per_s"] = str(float(row["samples_per_s"]) * 1000)
    with out.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = invoke(*args, "--r", "0,8,16")
    assert result.exit_code == 0, result.output
    again = list(csv.DictReader(out.open()))
    assert [row["r"] for row in again] == ["0", "8", "16"]
    assert [row["accuracy"] for row in again[:2]] == [row["accuracy"] for row in rows]
    speeds = [float(row["samples_per_s"]) for row in again]
    assert max(speeds) / min(speeds) < 100  # one machine state, not two
    for row, speed in zip(again, speeds, strict=True):
        assert float(row["speedup"]) == pytest.approx(speed / speeds[0], abs=0.01)
