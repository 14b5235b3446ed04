"""FLOP counting, throughput rows and the `fastast sweep` command without data."""

from __future__ import annotations

import csv

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.cli.options import parse_r_values
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.flops import count_flops
from fastast_cli.evaluation.throughput import final_tokens, sweep_throughput


def analytic_flops(tokens: int, dim: int, depth: int, classes: int, patches: int) -> int:
    """FLOPs of the plain AST by hand: 2 per multiply-add."""
    conv = 2 * patches * dim * 16 * 16
    linear = 2 * tokens * (dim * 3 * dim + dim * dim + 2 * dim * 4 * dim)  # qkv, proj, fc1, fc2
    attention = 2 * 2 * tokens * tokens * dim  # Q·Kᵀ and weights·V over all heads
    return conv + depth * (linear + attention) + 2 * dim * classes


def test_flops_count_includes_cpu_fused_attention():
    model = build_model("tiny", 7, target_length=64).eval()
    patches = model.config.num_patches
    expected = analytic_flops(patches + 2, 192, 12, 7, patches)
    assert count_flops(model, torch.randn(1, 64, 128)) == expected
    assert count_flops(model, torch.randn(3, 64, 128)) == 3 * expected


def test_flop_speedup_of_base_at_the_esc50_shape_matches_the_reference():
    model = build_model("base", 50, target_length=512).eval()
    fbank = torch.randn(1, 512, 128)
    plain = count_flops(model, fbank)
    ratios = {}
    for r in (20, 40):
        model.set_r(r)
        ratios[r] = plain / count_flops(model, fbank)
    # REFERENCE.md: r=20 1.28×, r=40 1.74× (602 tokens, 12 blocks, merging after attention).
    assert ratios[20] == pytest.approx(1.28, abs=0.01)
    assert ratios[40] == pytest.approx(1.74, abs=0.01)


def test_final_tokens_match_the_model():
    model = build_model("tiny", 5, target_length=100).eval()
    for r in (0, 3, 9, 50):
        model.set_r(r)
        with torch.no_grad():
            tokens = model.forward_blocks(model.embed(torch.randn(1, 100, 128)))
        assert final_tokens(model, r, "constant") == tokens.shape[1]


def test_sweep_rows_are_consistent():
    model = build_model("tiny", 5, target_length=64)
    calls = []
    rows = sweep_throughput(
        model, [0, 4, 8], batch_size=2, device="cpu", warmup=1, runs=2,
        on_step=lambda: calls.append(1),
    )
    assert len(calls) == 3 * (1 + 2)
    assert [row.r for row in rows] == [0, 4, 8]
    assert rows[0].speedup == 1.0 and rows[0].flop_speedup == 1.0
    assert [row.tokens for row in rows] == [62, 14, 3]
    gflops = [row.gflops for row in rows]
    assert gflops == sorted(gflops, reverse=True)
    for row in rows:
        assert row.samples_per_s > 0
        assert row.flop_speedup == pytest.approx(rows[0].gflops / row.gflops)
        assert row.speedup == pytest.approx(row.samples_per_s / rows[0].samples_per_s)
    assert model.r_schedule == [0] * 12  # the model's own setting is restored


def test_parse_r_values():
    assert parse_r_values("0:40:10") == [0, 10, 20, 30, 40]
    assert parse_r_values("0:3") == [0, 1, 2, 3]
    assert parse_r_values("0,8,16") == [0, 8, 16]
    for bad in ("a:b", "0:10:0", "1:2:3:4", "-1,2", ""):
        with pytest.raises(FastASTError):
            parse_r_values(bad)


def test_sweep_command_prints_and_writes_the_same_table(tmp_path):
    out = tmp_path / "sweep.csv"
    result = CliRunner().invoke(
        app,
        ["sweep", "--model", "tiny", "--frames", "64", "--r", "0,4,8", "--batch-size", "2",
         "--warmup", "0", "--runs", "1", "--device", "cpu", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [row["r"] for row in rows] == ["0", "4", "8"]
    assert [int(row["tokens"]) for row in rows] == [62, 14, 3]
    for row in rows:  # every CSV cell is shown in the console table
        for key in ("gflops", "samples_per_s", "speedup", "flop_speedup"):
            assert row[key] in result.output


def test_sweep_command_rejects_bad_input_without_a_traceback(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", "--r", "zero:forty"])
    assert result.exit_code == 2
    assert "not understood" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["sweep", "--model", "huge"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["sweep", "--model", "tiny", "--frames", "64", "--device", "cpu",
                                 "--dtype", "fp8", "--runs", "1"])
    assert result.exit_code == 2 and "unknown dtype" in result.output


def test_sweep_command_measures_a_checkpoint(tmp_path):
    from fastast_cli.models.checkpoints import save_checkpoint

    path = tmp_path / "tiny.pt"
    save_checkpoint(path, build_model("tiny", 3, target_length=48))
    out = tmp_path / "sweep.csv"
    args = ["sweep", "--checkpoint", str(path), "--r", "0,2", "--batch-size", "1",
            "--warmup", "0", "--runs", "1", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [int(row["tokens"]) for row in rows] == [12 * 4 + 2, 12 * 4 + 2 - 2 * 12]
    broken = tmp_path / "broken.pt"
    broken.write_text("not a checkpoint")
    result = CliRunner().invoke(app, ["sweep", "--checkpoint", str(broken)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_devices_and_dtypes_are_checked():
    from fastast_cli.devices import resolve_device, resolve_dtype

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(FastASTError, match="not a device"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(FastASTError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(FastASTError, match="unknown dtype"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_timing_and_backends_put_back_every_merging_setting():
    """An ElasticAST merging a fraction of each clip on a decreasing schedule, with PiToMe's
    own margin: timing it at another r, or running a backend made before its settings changed,
    leaves (or runs) exactly those settings, schedule and method options included."""
    from fastast_cli.evaluation.throughput import merging
    from fastast_cli.inference.backends import make_forward
    from fastast_cli.models.elastic import build_elastic

    torch.manual_seed(0)
    model = build_elastic("tiny", 3, depth=2, target_length=64).eval()
    model.set_r(0.2, "decreasing", method="pitome", method_options={"margin_start": 0.7})
    clips = [torch.randn(64, 128), torch.randn(40, 128)]
    with torch.no_grad():
        expected = model(clips)
    forward = make_forward(model, "torch")
    with merging(model, 4, "constant"):
        assert model.schedule == "constant" and model.r_fraction is None
    assert model.schedule == "decreasing" and model.r_fraction == 0.2
    assert model.reduction_method == "pitome" and model.reduction_options["margin_start"] == 0.7
    model.set_r(4, "constant")  # the backend keeps the settings it was made with
    with torch.no_grad():
        torch.testing.assert_close(forward(clips), expected)
