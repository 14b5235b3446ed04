"""A built wheel carries what the commands need: the recipes resolve from an install in a fresh
virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(path.name for path in (ROOT / "fastast_cli" / "recipes").glob("*.yaml"))


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_ships_the_recipes_and_an_install_finds_them(tmp_path):
    assert {"demo.yaml", "demo-teacher.yaml", "demo-distill.yaml", "esc50.yaml"} <= set(RECIPES)
    # Build from a copy of the sources, so that the checkout gets no build/ or egg-info.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "fastast_cli", source / "fastast_cli",
                    ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    built = run([*pip, "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(source)],
                tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("fastast-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(Path(name).name for name in archive.namelist()
                         if name.startswith("fastast_cli/recipes/"))
    assert shipped == RECIPES

    # A fresh virtual environment holding the wheel; the dependencies (torch, ...) come from
    # this interpreter's site-packages through a .pth file, which does not run the .pth files
    # there (so no editable install of the checkout is active).
    fresh = tmp_path / "venv"
    created = run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], tmp_path)
    assert created.returncode == 0, created.stderr
    python = fresh / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               tmp_path, env)
    assert site.returncode == 0, site.stderr
    target = Path(site.stdout.strip())
    dependencies = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (target / "dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    installed = run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed",
                     "--no-warn-script-location", "-q", str(wheel)], tmp_path, env)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"  # a working directory with no recipes/ in sight
    elsewhere.mkdir()
    # The shipped recipes and their `base:` chains load from the install...
    check = ("import fastast_cli\n"
             "from fastast_cli.training.config import load_config, recipe_path\n"
             "print(fastast_cli.__file__)\n"
             "print(recipe_path('demo-distill'))\n"
             "for name in ('esc50-tome-kd', 'demo-distill'):\n"
             "    print(name, load_config(name, {'out': 'run'}).teacher)\n")
    loaded = run([str(python), "-c", check], elsewhere, env)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines() == [
        str(target / "fastast_cli/__init__.py"),
        str(target / "fastast_cli/recipes/demo-distill.yaml"),
        "esc50-tome-kd efficientnet-b2", "demo-distill mobilenetv3-small"]
    # ...and through the installed `fastast` command: the run stops later, at the missing
    # dataset.
    command = run([str(fresh / "bin" / "fastast"), "distill", "--recipe", "demo-distill",
                   "--data", str(elsewhere / "no-data"), "--out", str(elsewhere / "run")],
                  elsewhere, env)
    assert command.returncode == 2, command.stderr
    assert "no manifest at" in command.stderr and "no recipe" not in command.stderr
