"""Shared fixtures: the generated demo dataset, prepared once per test session (once per
worker under `pytest -n`)."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist's workers inherit COLUMNS=80 and LINES=24 from their gateway; a plain run
    # has neither, and the command's output to a pipe is 160 columns wide unless COLUMNS says
    # otherwise (tests of 80 columns set it themselves). Before any import of the command.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)

import pytest  # noqa: E402
import torch  # noqa: E402

from fastast_cli.data.prepare import prepare_demo  # noqa: E402
from fastast_cli.progress import set_progress  # noqa: E402


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


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """The user's cache folder stays untouched, and `--backend auto` runs torch without
    measuring (tests of `auto` set $FASTAST_AUTO_BACKENDS themselves); subprocesses inherit
    both."""
    import os

    names = ("FASTAST_CACHE", "FASTAST_CACHE_DIR", "FASTAST_AUTO_BACKENDS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.pop("FASTAST_CACHE", None)
    os.environ["FASTAST_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["FASTAST_AUTO_BACKENDS"] = ""
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
