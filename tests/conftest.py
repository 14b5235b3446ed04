"""Shared fixtures: the generated demo dataset, prepared once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastast_cli.data.prepare import prepare_demo
from fastast_cli.progress import set_progress


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full demo set (10 classes × 40 clips, 5 folds): its manifest.yaml."""
    set_progress(False)
    out = tmp_path_factory.mktemp("demo")
    prepare_demo(out)
    return out / "manifest.yaml"


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo set (10 classes × 8 clips) for tests of mechanics, not of learning."""
    set_progress(False)
    out = tmp_path_factory.mktemp("small-demo")
    prepare_demo(out, clips_per_class=8)
    return out / "manifest.yaml"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: extra threads only thrash on a busy 2-core machine (restored afterwards).
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
