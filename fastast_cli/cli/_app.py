"""The Typer application and the one rule every command follows for user mistakes.

Help is click's plain layout (option names whole, descriptions wrapped beside them, flags
shown as flags, defaults in brackets), so it reads at 80 columns. The commands are listed in
workflow order from `COMMANDS` and each command's module (and torch) is imported only when that
command runs or shows its help: `fastast --help` and `fastast --version` start in a fraction of
a second.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from fastast_cli.atomic import WRITE_FAILURES
from fastast_cli.audio_limits import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_STREAM_S, set_max_duration
from fastast_cli.errors import FastASTError, Interrupted
from fastast_cli.signals import exit_code, signal_name
from fastast_cli.values import number

# Every command in workflow order: its name, the module that registers it, and one line for
# `fastast --help` (the command's own --help says the rest). A new command adds a line here.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("prepare", "prepare", "Prepare a dataset: 16 kHz audio, datafiles, labels, manifest."),
    ("train-teacher", "train", "Train a teacher (CNN, AST or ElasticAST) from labels."),
    ("distill", "train", "Train an AST student with token merging and distillation."),
    ("evaluate", "evaluate", "Accuracy, mAP, mAUC and d' of a checkpoint on a split."),
    ("sweep", "sweep", "Throughput, FLOPs and (with --data) the metric at each r."),
    ("report", "report", "The paper's Tables 1 and 2 and a summary from a sweep."),
    ("predict", "predict", "Top labels, timelines and events of audio files."),
    ("visualize", "visualize", "Draw which patches token merging grouped."),
    ("export", "export", "A checkpoint as ONNX or a transformers folder."),
)
HELP_WIDTH = 100  # help text never runs wider, however wide the terminal

# Per command, the defaults its None-default options take (e.g. a training recipe's fallback
# values), written into their help as "Default: ..."; filled by the command's module.
DEFAULT_NOTES: dict[str, Callable[[], Mapping[str, Any]]] = {}


def package_version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    try:
        return version("fastast")
    except PackageNotFoundError:
        from fastast_cli import __version__

        return __version__


def load_command_module(module: str) -> None:
    """Import `fastast_cli.cli.<module>` (registering its commands); a Ctrl-C during the slow
    imports (torch) is one line and exit code 130, not a traceback."""
    try:
        importlib.import_module(f"fastast_cli.cli.{module}")
    except KeyboardInterrupt as error:
        print(f"interrupted while starting ({signal_name(error)})", file=sys.stderr)
        raise typer.Exit(code=exit_code(error)) from None


def add_default_notes(command: TyperCommand, defaults: Mapping[str, Any]) -> None:
    """Say, in the help of each option of `command` that defaults to None (not given), the
    value it takes then (`defaults[name]`), unless its help already names a default."""
    for param in command.params:
        value = defaults.get(param.name or "")
        if (isinstance(param, TyperOption) and param.default is None and value is not None
                and "default" not in (param.help or "").lower()):
            if isinstance(value, bool) and param.secondary_opts:  # --elastic/--fixed
                value = param.opts[0] if value else param.secondary_opts[0]
            elif isinstance(value, list | tuple):
                value = ",".join(map(str, value))
            param.help = f"{param.help or ''} Default: the recipe's, else {value}.".strip()


class Commands(TyperGroup):
    """The root group: commands in workflow order, each module imported on first use."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = [name for name, _, _ in COMMANDS]
        return [*names, *(name for name in self.commands if name not in names)]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> TyperCommand | None:
        if cmd_name not in self.commands:
            modules = {name: module for name, module, _ in COMMANDS}
            if cmd_name not in modules:
                return None
            load_command_module(modules[cmd_name])
            self.commands.update(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
        command = self.commands.get(cmd_name)
        notes = DEFAULT_NOTES.get(cmd_name)
        if command is not None and notes is not None and not hasattr(command, "noted"):
            add_default_notes(command, notes())
            command.noted = True  # type: ignore[attr-defined]
        return command

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        """The command list from `COMMANDS` (no module imported); other commands already
        registered follow with their first sentence."""
        rows = [(name, summary) for name, _, summary in COMMANDS]
        listed = {name for name, _ in rows}
        rows += [(name, first_sentence(command)) for name, command in self.commands.items()
                 if name not in listed and not command.hidden]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def first_sentence(command: TyperCommand) -> str:
    """The first sentence of a command's help, whole (click would cut it to fit one line)."""
    text = " ".join((command.short_help or command.help or "").split())
    head, dot, _ = text.partition(". ")
    return head + dot.strip()


class Subcommands(TyperGroup):
    """A group of subcommands (`fastast prepare`): each listed with its first sentence, wrapped
    rather than cut."""

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        rows = [(name, first_sentence(command)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def show_version(value: bool) -> None:
    """`--version`: print the package version and stop."""
    if value:
        typer.echo(f"fastast {package_version()}")
        raise typer.Exit()


app = typer.Typer(
    name="fastast",
    help="Fast Audio Spectrogram Transformers: token merging (ToMe), cross-model knowledge "
    "distillation (CMKD) and throughput sweeps. Run `fastast COMMAND --help` for a command's "
    "options.",
    cls=Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": HELP_WIDTH},
)


@app.callback()
def fastast(
    version_flag: Annotated[bool, typer.Option(
        "--version", callback=show_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """The root's own options (its help is the app's)."""

# Tables fit the terminal (stacked when too wide); output to a file or a pipe is 160 columns
# wide unless COLUMNS says otherwise (rich would assume 80).
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

Quiet = Annotated[bool, typer.Option(
    "--quiet", help="No progress (bars on a terminal, periodic lines in a log file).")]

MAX_DURATION_HELP = (
    "Longest audio file read, in seconds, checked from its header before decoding. Default: "
    f"{DEFAULT_MAX_DURATION_S / 3600:g} h for a file decoded whole (datasets, prepare, "
    f"visualize), {DEFAULT_MAX_STREAM_S / 3600:g} h for one read in windows (predict); "
    "standard input is not limited.")
MaxDuration = Annotated[float | None, typer.Option(
    "--max-duration", help=MAX_DURATION_HELP, show_default=False)]


def apply_max_duration(seconds: float | None) -> None:
    """Set the audio duration limit of this process from --max-duration (None: defaults)."""
    if seconds is not None:
        number(seconds, "--max-duration", above=0.0)
    set_max_duration(seconds)


def user_errors(func: F) -> F:
    """Turn a FastASTError raised by the engine into one red line on stderr and exit code 2
    (an `Interrupted` one into a yellow line and 128 + its signal); a bare Ctrl-C, SIGTERM or
    SIGHUP into one line and 128 + the signal; a file the system would not let us write or
    read (a full disk, a read-only file system, no permission) into one red line and 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Interrupted as error:
            err_console.print(f"[bold yellow]interrupted:[/] {error}")
            raise typer.Exit(code=error.exit_code) from None
        except FastASTError as error:
            err_console.print(f"[bold red]error:[/] {escape(str(error))}")  # [..] is text
            raise typer.Exit(code=error.exit_code) from None
        except KeyboardInterrupt as error:
            err_console.print(f"[bold yellow]interrupted[/] ({signal_name(error)})")
            raise typer.Exit(code=exit_code(error)) from None
        except OSError as error:
            if error.errno not in WRITE_FAILURES:
                raise
            where = f"{error.filename}: " if error.filename else ""
            err_console.print(f"[bold red]error:[/] {escape(where)}{WRITE_FAILURES[error.errno]}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]

