"""A `prepare` output folder: what it may write, its resume state, its report and prepare.log.

Re-runs: `<out>/.fastast_state.json` remembers, per source file (path, size, mtime), where its
16-kHz WAV is and the fbank sums of its padded/cut features (`fastast_cli.data.prepare.conversion`).
Stored sums made with other feature parameters are dropped when the folder is opened.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastast_cli.atomic import remove_temporaries_in, write_json, write_text
from fastast_cli.data.features import NUM_MEL_BINS, SAMPLE_RATE
from fastast_cli.data.manifest import MANIFEST_HEADER, MANIFEST_NAME
from fastast_cli.data.safepath import real_path
from fastast_cli.errors import FastASTError

STATE_NAME = ".fastast_state.json"
LOG_NAME = "prepare.log"
LOG_HEADER = "# fastast prepare "
LABELS_NAME = "class_labels_indices.csv"
STATE_VERSION = 1
ROOT_FILES = (MANIFEST_NAME, LOG_NAME, LABELS_NAME, STATE_NAME)  # what prepare writes at --out
OUTPUT_FOLDERS = ("audio_16k", "datafiles", "raw", "downloads", "source")  # what prepare writes
DERIVED_FOLDERS = ("audio_16k", "datafiles")  # ... of which its own results (not sources)


@dataclass
class PrepareReport:
    """What a `prepare` run did; the CLI prints it."""

    dataset: str
    out: Path
    manifest: Path
    counts: dict[str, int] = field(default_factory=dict)
    converted: int = 0
    in_place: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    escaped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 0.0

    @property
    def log(self) -> Path:
        """The run's log file (skipped, missing, unsafe and refused entries)."""
        return self.out / LOG_NAME


@dataclass
class Workspace:
    """An output folder being prepared: feature parameters, resume state and the report."""

    out: Path
    report: PrepareReport
    target_length: int
    num_mel_bins: int = NUM_MEL_BINS
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, out: Path, dataset: str, target_length: int) -> Workspace:
        """Open `out` (created on first write) and load its resume state, if any.

        Stored fbank sums made with other feature parameters are dropped.
        """
        out = out.expanduser().resolve()
        if out.exists() and not out.is_dir():
            raise FastASTError(f"--out {out} exists and is not a folder")
        for name in OUTPUT_FOLDERS:
            if (out / name).is_symlink():
                raise FastASTError(
                    f"--out {out}: {name} is a symbolic link; prepare writes only into real "
                    "folders under --out (remove the link or choose another --out)"
                )
        saved = read_state(out)
        check_not_foreign(out, saved)
        remove_temporaries_in(out)  # left by a killed run (SIGKILL, power loss)
        for name in DERIVED_FOLDERS:
            remove_temporaries_in(out / name, recursive=True)
        report = PrepareReport(dataset, out, out / MANIFEST_NAME)
        workspace = cls(out, report, target_length)
        workspace.state = workspace._clips_of(saved)
        return workspace

    @property
    def params(self) -> dict[str, int]:
        """Feature parameters the stored fbank sums depend on."""
        return {
            "sample_rate": SAMPLE_RATE,
            "num_mel_bins": self.num_mel_bins,
            "target_length": self.target_length,
        }

    def _clips_of(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """The clip table of a resume `state` (`read_state`); sums are dropped if the
        parameters changed."""
        if state is None or state.get("version") != STATE_VERSION:
            return {}
        clips = state.get("clips", {})
        if state.get("params") != self.params:
            for entry in clips.values():
                entry["sums"] = None
        return clips

    def save_state(self) -> None:
        """Write the resume state atomically."""
        write_json(
            self.out / STATE_NAME,
            {"version": STATE_VERSION, "params": self.params, "clips": self.state},
            indent=None,
        )

    def skip(self, path: Path | str, reason: str) -> None:
        """Record an unusable file."""
        self.report.skipped.append((str(path), reason))

    def refuse(self, name: str, origin: Path | str) -> None:
        """Record a name (from file or folder `origin`) that leads outside its dataset folder."""
        self.report.escaped.append(f"{name}\t({origin})")

    def fail(self, message: str) -> FastASTError:
        """An error for a run that cannot finish: prepare.log is written first, and the message
        names the files left out so far (the first few; all of them in the log)."""
        write_text(self.report.log, format_log(self.report))
        left_out = [path for path, _ in self.report.skipped] + self.report.missing
        left_out += self.report.escaped
        if left_out:
            shown = ", ".join(Path(p.split("\t")[0]).name for p in left_out[:3])
            more = f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""
            message += f"; {len(left_out)} files left out ({shown}{more}; see {self.report.log})"
        return FastASTError(message)


def read_state(out: Path) -> dict[str, Any] | None:
    """The resume state an earlier prepare left in `out` (parsed JSON), None when there is
    none or it is unreadable."""
    try:
        state = json.loads((out / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def check_not_foreign(out: Path, state: dict[str, Any] | None) -> None:
    """Refuse an --out folder holding files by the names prepare writes at its root (manifest,
    log, labels CSV, resume state) when no earlier prepare wrote there: they are someone
    else's, and prepare would overwrite them. state: its resume state (`read_state`)."""
    if not out.is_dir() or prepared_before(out, state):
        return
    taken = [name for name in ROOT_FILES if (out / name).exists() or (out / name).is_symlink()]
    if taken:
        raise FastASTError(
            f"--out {out} holds {', '.join(taken)}, not written by fastast prepare: prepare "
            f"would overwrite {'it' if len(taken) == 1 else 'them'}; choose a new or empty "
            "folder for --out"
        )


def prepared_before(out: Path, state: dict[str, Any] | None) -> bool:
    """Whether an earlier prepare wrote into `out`: its manifest or its log (with their
    headers), or its resume `state`."""
    headers = {MANIFEST_NAME: MANIFEST_HEADER, LOG_NAME: LOG_HEADER}
    for name, header in headers.items():
        path = out / name
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as file:
                if file.read(len(header)).decode("utf-8", "replace") == header:
                    return True
    return state is not None and "version" in state and "clips" in state


def written_by_prepare(out: Path, path: Path) -> bool:
    """Whether `path` (links followed) lies in a folder of prepare's results under `out`: such
    files are never read back as source audio, so a re-run with `--out` inside the source is
    the same."""
    resolved = real_path(path)
    return any(resolved.is_relative_to(real_path(out) / name) for name in DERIVED_FOLDERS)


def format_log(report: PrepareReport) -> str:
    """The text of prepare.log: a summary, then every skipped, missing and unsafe entry."""
    lines = [
        f"{LOG_HEADER}{report.dataset} — {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"output: {report.out}",
        f"clips: converted {report.converted}, used in place {report.in_place}, "
        f"reused from an earlier run {report.reused}",
        "counts: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()),
        f"fbank mean {report.mean:.6f}, std {report.std:.6f}",
        *(f"note: {note}" for note in report.notes),
        *(f"warning: {warning}" for warning in report.warnings),
        f"\n[skipped: unreadable, corrupt or empty audio] {len(report.skipped)}",
        *(f"{path}\t{reason}" for path, reason in report.skipped),
        f"\n[missing: listed but not found] {len(report.missing)}",
        *report.missing,
        f"\n[unsafe archive members, not extracted] {len(report.unsafe)}",
        *report.unsafe,
        f"\n[refused: names leading outside their dataset folder] {len(report.escaped)}",
        *report.escaped,
    ]
    return "\n".join(lines) + "\n"
