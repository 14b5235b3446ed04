"""`prepare demo`: 10 classes × 40 procedural clips in ESC-50 layout, learnable, offline, fast."""

from __future__ import annotations

import csv
import time
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from data_fixtures import no_progress  # noqa: F401
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from fastast_cli.data.manifest import Manifest, load_manifest
from fastast_cli.data.prepare.demo import DEMO_CLASSES


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


def test_demo_classes_are_learnable(demo: tuple[Manifest, float]) -> None:
    """A linear model on time-pooled fbank statistics already separates most classes."""
    m, _ = demo

    def pooled(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = m.dataset_for(split)
        items = [ds[i] for i in range(len(ds))]
        x = np.stack([torch.cat([f.mean(0), f.std(0)]).numpy() for f, _ in items])
        return x, np.array([int(t.argmax()) for _, t in items])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only thrash on a busy 2-core machine
    try:
        x_train, y_train = pooled("train")
        x_eval, y_eval = pooled("eval")
        with threadpool_limits(1):
            model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
        accuracy = model.score(x_eval, y_eval)
    finally:
        torch.set_num_threads(threads)
    assert accuracy >= 0.75  # chance is 0.10; the sweeps' direction needs a time-aware model


def test_demo_rerun_is_quick_and_identical(demo: tuple[Manifest, float]) -> None:
    from fastast_cli.cli import app

    m, _ = demo
    before = (m.root / "datafiles" / "fold3_eval.json").read_text()
    result = CliRunner().invoke(app, ["prepare", "demo", "--out", str(m.root)])
    assert result.exit_code == 0
    assert "400 already prepared" in result.stdout
    assert (m.root / "datafiles" / "fold3_eval.json").read_text() == before
