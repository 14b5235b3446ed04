"""`--help` reads at 80 columns, lists commands in workflow order, shows defaults and flags as
flags; `fastast --help` and `--version` start without torch."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.main import get_command
from typer.testing import CliRunner

from fastast_cli.cli import app
from fastast_cli.cli._app import COMMANDS, package_version

WORKFLOW = ["prepare", "train-teacher", "distill", "evaluate", "sweep", "report", "predict",
            "visualize", "export"]


def every_command() -> list[tuple[list[str], object]]:
    """(argv prefix, click command) of the root, every command and every subcommand."""
    root = get_command(app)
    found: list[tuple[list[str], object]] = [([], root)]
    for name, command in root.commands.items():
        found.append(([name], command))
        for sub, subcommand in getattr(command, "commands", {}).items():
            found.append(([name, sub], subcommand))
    return found


def help_of(*argv: str, columns: int = 80) -> str:
    result = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_help_fits_80_columns_with_whole_option_names():
    commands = every_command()
    assert len(commands) > len(WORKFLOW)  # the root, its commands, prepare's datasets
    for argv, command in commands:
        text = help_of(*argv)
        long = [line for line in text.splitlines() if len(line) > 80]
        assert not long, (argv, long)
        assert "…" not in text, argv
        for param in command.params:  # type: ignore[attr-defined]
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("-"):
                    assert name in text, (argv, name)


def test_descriptions_have_room_and_defaults_and_flags_show():
    text = help_of("sweep")
    # the description column starts before column 40: at least 38 characters per line
    starts = [line.index("Merging rates") for line in text.splitlines() if "Merging rates" in line]
    assert starts and starts[0] <= 42
    assert "[default: 0:40:10]" in text
    assert "<bool>" not in text and "--quiet " in text + " "
    training = help_of("distill")
    assert "Training epochs. Default: the recipe's, else 25." in " ".join(training.split())
    assert "Default: the recipe's, else --fixed." in " ".join(training.split())
    # a flag takes no value: `--quiet true` is refused, as its help (no <bool>) says
    refused = CliRunner().invoke(app, ["report", "x.csv", "--baseline", "a", "--tome", "b",
                                       "--r", "0", "--quiet", "true"])
    assert refused.exit_code == 2


def test_commands_are_listed_in_workflow_order():
    assert [name for name, _, _ in COMMANDS] == WORKFLOW
    text = help_of()
    section = text[text.index("Commands:"):]
    positions = [section.index(f"\n  {name} ") for name in WORKFLOW]
    assert positions == sorted(positions)
    registered = set(get_command(app).commands)
    listed = {name for name, _, _ in COMMANDS}
    assert registered == listed, f"add {registered - listed} to cli._app.COMMANDS"


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert package_version() == version("fastast")
    assert result.output.strip() == f"fastast {version('fastast')}"


def test_help_and_version_start_without_torch():
    script = """
import sys
from fastast_cli.cli import main
sys.argv = ["fastast", *sys.argv[1:]]
try:
    main()
except SystemExit as done:
    assert done.code in (0, None), done.code
heavy = [name for name in ("torch", "torchaudio", "matplotlib", "fastast_cli.models")
         if name in sys.modules]
assert not heavy, heavy
print("light")
"""
    for argv in (["--help"], ["--version"]):
        done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        assert done.stdout.strip().endswith("light")
        assert ("Usage: fastast" if argv == ["--help"] else "fastast 0.") in done.stdout


def test_a_command_loads_only_when_run():
    script = """
import sys
from fastast_cli.cli import main
sys.argv = ["fastast", "report", "--help"]
try:
    main()
except SystemExit:
    pass
assert "fastast_cli.cli.sweep" not in sys.modules and "fastast_cli.cli.train" not in sys.modules
print("only report")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "only report" in done.stdout, done.stderr


def test_a_usage_error_loads_no_timm_scikit_learn_or_matplotlib():
    """A mistyped option of a command that imports the models answers in ~4 s, not ~10: timm
    (which imports torchvision and torch._dynamo) loads only to build a CNN, scikit-learn only
    to compute a metric, matplotlib only to draw."""
    script = """
import sys
from fastast_cli.cli import main
sys.argv = ["fastast", sys.argv[1], "--no-such-option"]
try:
    main()
except SystemExit as done:
    assert done.code == 2, done.code
assert "fastast_cli.models" in sys.modules  # the command's options did load the engine
heavy = [name for name in ("timm", "torchvision", "sklearn", "matplotlib")
         if name in sys.modules]
assert not heavy, heavy
print("light enough")
"""
    for command in ("distill", "predict", "sweep"):
        done = subprocess.run([sys.executable, "-c", script, command], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "light enough" in done.stdout, (command,
                                                                               done.stderr)
