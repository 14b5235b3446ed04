"""`fastast visualize`: the token partition of the patch grid, the figure, and plot helpers."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.models.ast import NUM_PREFIX_TOKENS
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.models.reduction.schedule import resolve_schedule, tokens_per_block
from fastast_cli.models.teachers import CNNClassifier, CNNConfig
from fastast_cli.reports.merge_view import (
    boundary_segments,
    cell_edges,
    draw_merge_view,
    merge_view,
    token_grid,
)
from fastast_cli.reports.plots import plot_tradeoff

WINDOW = 64


pytestmark = pytest.mark.usefixtures("one_thread")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def features(seed: int = 0) -> torch.Tensor:
    return torch.randn(WINDOW, 128, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("r", "strides"), [(4, (10, 10)), (8, (10, 10)), (3, (16, 16)), (0, (10, 10))]
)
def test_token_grid_partitions_the_patches(r: int, strides: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", 5, target_length=WINDOW, fstride=strides[0], tstride=strides[1])
    model.set_r(r).eval()
    view = merge_view(model, features())
    source = model.last_state.source[0]  # [N_final, N0], kept from the tracked forward pass
    f_dim, t_dim = model.config.grid
    final = source.shape[0]

    assert view.grid.shape == (f_dim, t_dim)
    # every patch belongs to exactly one final token, and it is the one the grid names
    patch_cover = source[:, NUM_PREFIX_TOKENS:]
    assert torch.equal(patch_cover.sum(dim=0), torch.ones(f_dim * t_dim))
    for f in range(f_dim):
        for t in range(t_dim):
            token = int(view.grid[f, t]) + NUM_PREFIX_TOKENS
            assert source[token, NUM_PREFIX_TOKENS + f * t_dim + t] == 1
    # every non-prefix final token covers at least one patch: ids are exactly 0..final-3
    assert sorted(set(view.grid.flatten().tolist())) == list(range(final - NUM_PREFIX_TOKENS))
    assert view.num_groups == final - NUM_PREFIX_TOKENS
    assert int(view.group_sizes().min()) >= 1 and int(view.group_sizes().sum()) == f_dim * t_dim
    # the prefix tokens cover only themselves
    assert torch.equal(source[:NUM_PREFIX_TOKENS, NUM_PREFIX_TOKENS:],
                       torch.zeros(NUM_PREFIX_TOKENS, f_dim * t_dim))
    # counts: input tokens, then tokens after each block, as the schedule predicts
    n0 = f_dim * t_dim + NUM_PREFIX_TOKENS
    assert view.counts == [n0, *tokens_per_block(n0, model.r_schedule, NUM_PREFIX_TOKENS)]
    assert view.counts[-1] == final
    assert model.track_source is False  # restored
    if r == 0:
        assert torch.equal(view.grid.flatten(), torch.arange(f_dim * t_dim))


def test_token_grid_rejects_a_non_partition() -> None:
    source = torch.eye(2 + 6)[:5].clone()  # patches 3, 4, 5 in no final token
    with pytest.raises(ValueError, match="partition"):
        token_grid(source, (2, 3))


def test_stride_cells_tile_the_covered_input() -> None:
    assert cell_edges(12, 10, 16).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 126]
    assert cell_edges(4, 16, 16).tolist() == [0, 16, 32, 48, 64]
    grid = np.array([[0, 0, 1], [2, 2, 1]])
    segments = boundary_segments(grid, np.array([0.0, 10, 26]), np.array([0.0, 10, 20, 36]))
    # vertical: between t=1|2 in both rows; horizontal: between the rows at t=0 and t=1
    assert sorted(segments) == sorted([
        ((20.0, 0.0), (20.0, 10.0)), ((20.0, 10.0), (20.0, 26.0)),
        ((0.0, 10.0), (10.0, 10.0)), ((10.0, 10.0), (20.0, 10.0)),
    ])


def test_draw_merge_view_writes_png_of_the_asked_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", 5, target_length=WINDOW).set_r(4).eval()
    out = tmp_path / "figs" / "merge.png"
    draw_merge_view(merge_view(model, features()), out, size=(900, 500))
    assert out.stat().st_size > 5000
    assert png_size(out) == (900, 500)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An AST and a CNN checkpoint and a 1-s stereo 22.05 kHz clip."""
    folder = tmp_path_factory.mktemp("visualize")
    torch.manual_seed(0)
    paths = {"ast": folder / "ast.pt", "cnn": folder / "cnn.pt", "wav": folder / "clip.wav"}
    ast = build_model("tiny", 5, target_length=WINDOW, labels=list("abcde"))
    save_checkpoint(paths["ast"], ast, mean=-5.0, std=4.0, loss="ce")
    save_checkpoint(paths["cnn"], CNNClassifier(CNNConfig(5, "mobilenetv3-small")),
                    mean=-5.0, std=4.0)
    rng = np.random.default_rng(0)
    sf.write(paths["wav"], 0.1 * rng.standard_normal((22050, 2)).astype(np.float32), 22050)
    return paths


def visualize(*args: str):
    return CliRunner().invoke(app, ["visualize", *args, "--device", "cpu"])


def test_cli_writes_the_figure(saved: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merge.png"
    result = visualize(str(saved["wav"]), "--checkpoint", str(saved["ast"]), "--r", "4",
                       "--out", str(out), "--width", "800", "--height", "450", "--offset", "0.3")
    assert result.exit_code == 0, result.output
    assert png_size(out) == (800, 450) and out.stat().st_size > 5000
    assert "60 patches merged into 12 tokens" in result.stdout
    assert "62 → 58" in result.stdout


def test_cli_takes_the_schedule(saved: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merge.png"
    result = visualize(str(saved["wav"]), "--checkpoint", str(saved["ast"]), "--r", "4",
                       "--schedule", "decreasing", "--out", str(out))
    assert result.exit_code == 0, result.output
    counts = tokens_per_block(62, resolve_schedule(4, 12, "decreasing"), 2)
    assert " → ".join(str(c) for c in counts) in result.stdout  # 62 → 54 → ...: 8 first


def test_cli_rejects_cnn_and_bad_offset(saved: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merge.png"
    result = visualize(str(saved["wav"]), "--checkpoint", str(saved["cnn"]), "--out", str(out))
    assert result.exit_code == 2 and "AST checkpoint" in result.stderr
    assert "Traceback" not in result.output and not out.exists()
    result = visualize(str(saved["wav"]), "--checkpoint", str(saved["ast"]), "--out", str(out),
                       "--offset", "5")
    assert result.exit_code == 2 and "--offset" in result.stderr
    result = visualize(str(saved["wav"]), "--checkpoint", str(saved["ast"]),
                       "--out", str(tmp_path / "merge.xyz"))
    assert result.exit_code == 2 and "cannot write .xyz" in result.stderr
    result = visualize(str(tmp_path / "none.wav"), "--checkpoint", str(saved["ast"]),
                       "--out", str(out))
    assert result.exit_code == 2 and "not found" in result.stderr


def test_plot_tradeoff(tmp_path: Path) -> None:
    rows = [{"r": r, "samples_per_s": 100 + 20 * r, "accuracy": 0.9 - 0.01 * r} for r in (0, 4, 8)]
    out = plot_tradeoff(rows, "samples_per_s", "accuracy", "r", tmp_path / "trade.png",
                        "accuracy vs speed", x_label="samples/s")
    assert out == tmp_path / "trade.png" and png_size(out) == (900, 600)
    assert out.stat().st_size > 5000
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no temporary left
    with pytest.raises(ValueError, match="no rows"):
        plot_tradeoff([], "x", "y", "r", tmp_path / "empty.png", "t")
    with pytest.raises(ValueError, match="has no accuracy"):
        plot_tradeoff([{"r": 0, "samples_per_s": 1}], "samples_per_s", "accuracy", "r",
                      tmp_path / "bad.png", "t")
    with pytest.raises(ValueError, match="must be numbers"):
        plot_tradeoff([{"r": 0, "samples_per_s": "fast", "accuracy": 1}], "samples_per_s",
                      "accuracy", "r", tmp_path / "bad.png", "t")
