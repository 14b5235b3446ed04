"""`prepare demo`: 10 classes × 40 procedural clips in ESC-50 layout, in pairs told apart by fine
structure only, offline, fast; the demo recipe reads them as hundreds of tokens."""

from __future__ import annotations

import csv
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from data_fixtures import no_progress  # noqa: F401
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from fastast_cli.data.manifest import Manifest, load_manifest
from fastast_cli.data.prepare.demo import DEMO_CLASSES, DEMO_PAIRS

DEMO_CLASSES_INDEX = {name: k for k, name in enumerate(DEMO_CLASSES)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, float]:
    """The demo set prepared through the CLI, and how long that took."""
    from fastast_cli.cli import app

    out = tmp_path_factory.mktemp("demo") / "demo"
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["prepare", "demo", "--out", str(out), "--quiet"])
    elapsed = time.perf_counter() - start
    assert result.exit_code == 0, result.output + result.stderr
    return load_manifest(out), elapsed


def test_demo_has_esc50_layout_and_five_folds(demo: tuple[Manifest, float]) -> None:
    m, elapsed = demo
    assert elapsed < 60
    source = m.root / "source" / "ESC-50-demo"
    with open(source / "meta" / "esc50.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 400 and len(list((source / "audio").glob("*.wav"))) == 400
    assert Counter(r["category"] for r in rows) == {name: 40 for name in DEMO_CLASSES}
    assert all(
        r["filename"].startswith(f"{r['fold']}-") and r["filename"].endswith(f"-{r['target']}.wav")
        for r in rows
    )
    info = sf.info(str(source / "audio" / rows[0]["filename"]))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 32000)
    assert (m.dataset, m.num_classes, m.target_length, m.sample_rate) == ("demo", 10, 200, 16000)
    assert {m.counts[f"fold{k}_eval"] for k in range(1, 6)} == {80}
    assert {m.counts[f"fold{k}_train"] for k in range(1, 6)} == {320}
    assert m.label_names == list(DEMO_CLASSES)


def _fbanks(m: Manifest, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fold-1 `split` clips' fbanks [clips, frames, mel bins] and class indices [clips]."""
    ds = m.dataset_for(split)
    items = [ds[i] for i in range(len(ds))]
    return (np.stack([f.numpy() for f, _ in items]),
            np.array([int(t.argmax()) for _, t in items]))


def _band_means(fbanks: np.ndarray) -> np.ndarray:
    """Coarse statistics [clips, mel bins]: each band's mean energy over the clip."""
    return fbanks.mean(axis=1)


def _modulation_spectrum(fbanks: np.ndarray) -> np.ndarray:
    """Fine structure, wherever it sits in the clip [clips, 40 · 32]: the log magnitude of the
    fbank's 2-D Fourier transform at low time and frequency modulation rates. Shift-invariant;
    it keeps a pattern's rates and its orientation (|F(u, v)| ≠ |F(u, -v)|)."""
    centred = fbanks - fbanks.mean(axis=(1, 2), keepdims=True)
    return np.log1p(np.abs(np.fft.fft2(centred))[:, :40, :32]).reshape(len(fbanks), -1)


def test_demo_pairs_differ_only_in_fine_structure(demo: tuple[Manifest, float]) -> None:
    """Band energies tell the five pairs apart but not the two classes of a pair; their fine
    time-frequency structure tells every class apart (so merging tokens can cost accuracy)."""
    m, _ = demo
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only thrash on a busy 2-core machine
    try:
        train, y_train = _fbanks(m, "train")
        evaluation, y_eval = _fbanks(m, "eval")
    finally:
        torch.set_num_threads(threads)
    pair_of = {DEMO_CLASSES_INDEX[name]: k for k, pair in enumerate(DEMO_PAIRS) for name in pair}
    pair_train = np.array([pair_of[y] for y in y_train])
    pair_eval = np.array([pair_of[y] for y in y_eval])

    def score(features, labels_train, labels_eval, train_rows, eval_rows) -> float:
        with threadpool_limits(1):
            model = LogisticRegression(max_iter=3000).fit(
                features(train[train_rows]), labels_train[train_rows])
            return model.score(features(evaluation[eval_rows]), labels_eval[eval_rows])

    every_train, every_eval = np.ones(len(y_train), bool), np.ones(len(y_eval), bool)
    assert score(_band_means, pair_train, pair_eval, every_train, every_eval) >= 0.95
    for k, pair in enumerate(DEMO_PAIRS):
        rows_train, rows_eval = pair_train == k, pair_eval == k  # 64 and 16 clips
        coarse = score(_band_means, y_train, y_eval, rows_train, rows_eval)
        fine = score(_modulation_spectrum, y_train, y_eval, rows_train, rows_eval)
        assert coarse <= 0.75, (pair, coarse)  # chance is 0.5 (16 clips: 0.75 is 4 off)
        assert fine >= 0.9, (pair, fine)
    assert score(_modulation_spectrum, y_train, y_eval, every_train, every_eval) >= 0.85


def test_demo_recipe_gives_hundreds_of_tokens(small_demo, tmp_path) -> None:
    """The demo's AST reads a clip as hundreds of tokens (the regime merging is made for), and
    the largest r of `make demo`'s sweep still leaves tokens after the last block."""
    from fastast_cli.evaluation.throughput import final_tokens
    from fastast_cli.training.config import load_config
    from fastast_cli.training.setup import run_model

    manifest = load_manifest(small_demo)
    config = load_config("demo", {"data": str(small_demo), "out": str(tmp_path)})
    model = run_model(config, manifest, print)
    tokens = model.config.num_patches + 2  # + CLS and DIST
    assert (config.fstride, config.tstride, manifest.target_length) == (10, 10, 200)
    assert tokens == 12 * 19 + 2 == 230
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    low, high, step = map(int, re.search(r"--r (\d+):(\d+):(\d+)", makefile).groups())
    trained_r = int(re.search(r"^DEMO_R := (\d+)", makefile, re.M).group(1))
    assert low == 0 and trained_r in range(low, high + 1, step)
    assert 2 < final_tokens(model, high, "constant") < tokens // 4  # merged hard, not capped


def test_demo_rerun_is_quick_and_identical(demo: tuple[Manifest, float]) -> None:
    from fastast_cli.cli import app

    m, _ = demo
    before = (m.root / "datafiles" / "fold3_eval.json").read_text()
    result = CliRunner().invoke(app, ["prepare", "demo", "--out", str(m.root)])
    assert result.exit_code == 0
    assert "400 already prepared" in result.stdout
    assert (m.root / "datafiles" / "fold3_eval.json").read_text() == before
