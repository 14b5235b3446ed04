"""Every command that writes checks its output path before any work, and never replaces a file
it did not write (except the one file a user names with --out, which it says it replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.cli import sweep as sweep_cli
from fastast_cli.data.manifest import load_manifest
from fastast_cli.models.checkpoints import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(small_demo, tmp_path_factory) -> Path:
    """A tiny AST for small_demo: 96 patches, 2 blocks."""
    model = build_model("tiny", 10, target_length=200, depth=2, fstride=16, tstride=16,
                        labels=load_manifest(small_demo).label_names)
    mean, std = load_manifest(small_demo).norm_stats()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, mean=mean, std=std)


@pytest.fixture(scope="module")
def clip(small_demo) -> Path:
    return next((small_demo.parent / "source").rglob("*.wav"))


@pytest.fixture
def no_measuring(monkeypatch):
    """Fail the test if a sweep starts measuring."""
    def measuring(*args, **kwargs):
        raise AssertionError("measured before checking --out")

    monkeypatch.setattr(sweep_cli, "sweep_throughput", measuring)


def invoke(*args: str):
    return CliRunner().invoke(app, [*args])


def unwritable(tmp_path: Path) -> dict[str, Path]:
    """Output paths that cannot be written, by what is wrong with them."""
    a_file = tmp_path / "a-file"
    a_file.write_text("user data")
    return {"under a file": a_file / "x" / "out.csv", "in /proc": Path("/proc/fastast-x/out.csv")}


def test_every_command_refuses_an_unwritable_out_before_any_work(
        small_demo, checkpoint, clip, tmp_path, no_measuring):
    for why, path in unwritable(tmp_path).items():
        elsewhere = str(tmp_path / "src")  # never read: --out is refused first
        commands = {
            "prepare demo": ["prepare", "demo", "--out", str(path.parent)],
            "prepare esc50": ["prepare", "esc50", "--src", elsewhere, "--out", str(path.parent)],
            "prepare speechcommands": ["prepare", "speechcommands", "--src", elsewhere, "--out",
                                       str(path.parent)],
            "prepare audioset": ["prepare", "audioset", "--segments", elsewhere, "--labels",
                                 elsewhere, "--audio-dir", elsewhere, "--out", str(path.parent)],
            "prepare folder": ["prepare", "folder", "--src", elsewhere, "--out",
                               str(path.parent)],
            "train-teacher": ["train-teacher", "--recipe", "demo", "--data", str(small_demo),
                              "--out", str(path.parent)],
            "distill": ["distill", "--recipe", "demo", "--data", str(small_demo), "--out",
                        str(path.parent)],
            "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--data", str(small_demo),
                         "--out", str(path.parent)],
            "evaluate --lengths": ["evaluate", "--checkpoint", str(checkpoint), "--data",
                                   str(small_demo), "--lengths", "1", "--out", str(path.parent)],
            "export": ["export", str(checkpoint), "--out", str(path.with_suffix(".onnx"))],
            "export --format hf": ["export", str(checkpoint), "--format", "hf", "--out",
                                   str(path.parent / "hf")],
            "sweep": ["sweep", "--model", "tiny", "--out", str(path)],
            "sweep --data": ["sweep", "--data", str(small_demo), "--checkpoint",
                             str(checkpoint), "--out", str(path)],
            "predict": ["predict", str(clip), "--checkpoint", str(checkpoint), "--out",
                        str(path.with_suffix(".json"))],
            "visualize": ["visualize", str(clip), "--checkpoint", str(checkpoint), "--out",
                          str(path.with_suffix(".png"))],
        }
        for name, args in commands.items():
            result = invoke(*args)
            assert result.exit_code == 2, (name, why, result.output)
            assert "cannot be written" in result.output, (name, why, result.output)
    assert (tmp_path / "a-file").read_text() == "user data"
    a_file = str(tmp_path / "a-file")
    for args in (["train-teacher", "--recipe", "demo", "--data", str(small_demo)],
                 ["prepare", "folder", "--src", str(tmp_path / "src")],
                 ["evaluate", "--checkpoint", str(checkpoint), "--data", str(small_demo)],
                 ["export", str(checkpoint), "--format", "hf"]):
        result = invoke(*args, "--out", a_file)
        assert result.exit_code == 2 and "is a file, not a folder" in result.output, args
    assert (tmp_path / "a-file").read_text() == "user data"


def test_evaluate_replaces_its_own_results_but_not_a_users_file(small_demo, checkpoint,
                                                                 tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(small_demo), "--device",
            "cpu", "--out", str(out)]
    assert invoke(*args).exit_code == 0
    first = (out / "predictions.csv").read_text()
    assert invoke(*args).exit_code == 0  # a rerun replaces evaluate's own files
    assert (out / "predictions.csv").read_text() == first
    (out / "metrics.json").write_text('{"my": "numbers"}')
    result = invoke(*args)
    assert result.exit_code == 2 and "not an evaluation's metrics.json" in result.output
    assert (out / "metrics.json").read_text() == '{"my": "numbers"}'
    (out / "metrics.json").unlink()
    (out / "per_class.csv").write_text("species,count\nowl,3\n")
    result = invoke(*args)
    assert result.exit_code == 2 and "not a table of this kind" in result.output
    assert (out / "per_class.csv").read_text() == "species,count\nowl,3\n"


def test_sweep_never_replaces_a_users_csv_or_png(small_demo, checkpoint, tmp_path,
                                                 no_measuring):
    mine = tmp_path / "results.csv"
    mine.write_text("species,count\nowl,3\n")
    for args in (["--model", "tiny"], ["--data", str(small_demo), "--checkpoint",
                                       str(checkpoint)]):
        result = invoke("sweep", *args, "--out", str(mine))
        assert result.exit_code == 2 and "not a table of this kind" in result.output
    assert mine.read_text() == "species,count\nowl,3\n"
    (tmp_path / "plot.png").write_bytes(b"my figure")
    result = invoke("sweep", "--data", str(small_demo), "--checkpoint", str(checkpoint),
                    "--out", str(tmp_path / "plot.csv"))
    assert result.exit_code == 2 and "not from this sweep" in result.output
    assert (tmp_path / "plot.png").read_bytes() == b"my figure"


def test_sweep_without_data_takes_named_checkpoints_notes_capped_r_and_says_replaced(
        checkpoint, tmp_path):
    out = tmp_path / "speed.csv"
    args = ["sweep", "--checkpoint", f"tiny={checkpoint}", "--r", "0,20,60", "--warmup", "0",
            "--runs", "1", "--batch-size", "1", "--device", "cpu", "--out", str(out)]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.output.count("note: r=60 is more than 96 patches allow") == 1
    assert "wrote" in result.output
    rows = out.read_text().splitlines()
    assert rows[0].startswith("r,tokens") and [row.split(",")[:2] for row in rows[1:]] == [
        ["0", "98"], ["20", "58"], ["60", "26"]]  # r=60: 98 → 50 → 26, half at most
    again = invoke(*args)
    assert again.exit_code == 0 and f"replaced {out}" in again.output.replace("\n", "")
    pattern = invoke("sweep", "--checkpoint", str(tmp_path / "r{r}/best.pt"))
    assert pattern.exit_code == 2 and "patterns need --data" in pattern.output


def test_predict_and_visualize_say_when_they_replaced_the_named_file(checkpoint, clip,
                                                                     tmp_path):
    for command, name in (("predict", "scores.json"), ("visualize", "merge.png")):
        out = tmp_path / name
        out.write_bytes(b"an older result")
        result = invoke(command, str(clip), "--checkpoint", str(checkpoint), "--device", "cpu",
                        "--out", str(out))
        assert result.exit_code == 0, result.output
        assert f"replaced {out}" in result.output.replace("\n", ""), result.output
        assert out.read_bytes() != b"an older result"


def test_evaluate_and_export_note_once_when_r_exceeds_what_the_tokens_allow(
        small_demo, checkpoint, tmp_path, monkeypatch):
    from fastast_cli.cli import export as export_cli

    def stop(*args, **kwargs):
        raise AssertionError("the note comes before the export")

    monkeypatch.setattr(export_cli, "export_onnx", stop)
    capped = "note: r=60 is more than 96 patches allow: block 1 merges only 48 tokens"
    for r, notes in (("20", 0), ("60", 1)):  # r=20: 98 → 78 → 58 tokens, nothing capped
        evaluated = invoke("evaluate", "--checkpoint", str(checkpoint), "--data",
                           str(small_demo), "--device", "cpu", "--r", r)
        assert evaluated.exit_code == 0, evaluated.output
        exported = invoke("export", str(checkpoint), "--r", r, "--out", str(tmp_path / "m.onnx"))
        assert isinstance(exported.exception, AssertionError), exported.output
        for result in (evaluated, exported):
            output = result.output.replace("\n", " ")
            assert output.count("patches allow") == notes, output
            assert (capped in output) == bool(notes), output
