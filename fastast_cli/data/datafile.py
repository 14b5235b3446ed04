"""AST's two file formats: JSON datafiles and the labels CSV.

Datafile: `{"data": [{"wav": "path.wav", "labels": "mid1,mid2"}, ...]}` (extra keys are kept
by AST and ignored here). Labels CSV: header `index,mid,display_name`, one row per class.
Relative `wav` paths are resolved against the datafile's folder first, then the working
directory (where the original AST code resolves them), so AST users' datafiles work unchanged.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from fastast_cli.atomic import write_json, write_text
from fastast_cli.data.safepath import real_path
from fastast_cli.errors import FastASTError
from fastast_cli.values import load_json

LABELS_HEADER = ("index", "mid", "display_name")


@dataclass(frozen=True)
class LabelSet:
    """Class mids and display names in index order, with a mid → index lookup."""

    mids: tuple[str, ...]
    names: tuple[str, ...]
    index: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.index.update({mid: i for i, mid in enumerate(self.mids)})

    def __len__(self) -> int:
        return len(self.mids)


@dataclass(frozen=True)
class Entry:
    """One datafile row: the audio path (resolved) and its label mids."""

    wav: Path
    labels: tuple[str, ...]


def read_labels_csv(path: str | os.PathLike[str]) -> LabelSet:
    """Read a labels CSV (`index,mid,display_name`); rows must be indexed 0..N-1 in order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise FastASTError(f"cannot read labels CSV {path}: {error.strerror or error}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(c.strip() for c in rows[0][:3]) != LABELS_HEADER:
        raise FastASTError(f"{path}: expected a labels CSV with header 'index,mid,display_name'")
    mids, names = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 3 or row[0].strip() != str(len(mids)):
            raise FastASTError(
                f"{path}:{line}: expected 'index,mid,display_name' with index {len(mids)}"
            )
        mids.append(row[1].strip())
        names.append(row[2].strip())
    if not mids:
        raise FastASTError(f"{path}: the labels CSV lists no classes")
    return LabelSet(tuple(mids), tuple(names))


def write_labels_csv(path: str | os.PathLike[str], mids: list[str], names: list[str]) -> None:
    """Write a labels CSV atomically (display names quoted when they contain commas)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABELS_HEADER)
    for index, (mid, name) in enumerate(zip(mids, names, strict=True)):
        writer.writerow([index, mid, name])
    write_text(path, buffer.getvalue())


def resolve_wav(wav: str, datafile_dir: Path) -> Path:
    """Absolute path of a datafile `wav` entry (see the module docstring for the rule)."""
    path = Path(wav).expanduser()
    if path.is_absolute():
        return path
    beside = datafile_dir / path
    if beside.exists() or not Path(wav).exists():
        return real_path(beside)
    return real_path(wav)


def read_datafile(path: str | os.PathLike[str]) -> list[Entry]:
    """Entries of an AST JSON datafile, with wav paths resolved."""
    path = Path(path)
    entries, first_row = [], {}
    for i, (wav, mids) in enumerate(read_datafile_rows(path)):
        entry = Entry(resolve_wav(wav, path.parent), mids)
        if entry.wav in first_row:
            raise FastASTError(f"{path}: entries {first_row[entry.wav]} and {i} both list "
                               f"{entry.wav}: each clip may be listed once")
        first_row[entry.wav] = i
        entries.append(entry)
    return entries


def read_datafile_rows(path: str | os.PathLike[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(wav string as written, label mids) per entry of an AST JSON datafile; nothing resolved.
    `labels` is AST's comma-separated string (a list of strings is taken too)."""
    path = Path(path)
    try:
        content = load_json(path.read_text(encoding="utf-8"), str(path), limit=None)
    except OSError as error:
        raise FastASTError(f"cannot read datafile {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise FastASTError(f"datafile {path} is not text (expected AST's JSON format)") from None
    data = content.get("data") if isinstance(content, dict) else None
    if not isinstance(data, list):
        raise FastASTError(
            f'{path}: expected an AST datafile {{"data": [{{"wav": ..., "labels": ...}}]}}'
        )
    rows = []
    for i, row in enumerate(data):
        if not isinstance(row, dict) or "wav" not in row or "labels" not in row:
            raise FastASTError(f"{path}: entry {i} lacks 'wav' or 'labels'")
        labels = row["labels"]
        if not isinstance(row["wav"], str) or isinstance(labels, bool) or not isinstance(
                labels, str | int | list):
            raise FastASTError(f"{path}: entry {i}: 'wav' and 'labels' must be text")
        parts = labels if isinstance(labels, list) else str(labels).split(",")
        rows.append((row["wav"], tuple(str(m).strip() for m in parts if str(m).strip())))
    return rows


def datafile_wav(wav: Path, datafile_dir: Path) -> str:
    """How a prepared datafile refers to `wav`: relative if under the datafile's dataset folder."""
    wav = wav.resolve()
    root = datafile_dir.resolve().parent
    if wav.is_relative_to(root):
        return os.path.relpath(wav, datafile_dir.resolve())
    return str(wav)


def write_datafile(path: str | os.PathLike[str], rows: list[tuple[Path, list[str]]]) -> None:
    """Write an AST datafile atomically from (wav path, label mids) rows."""
    path = Path(path)
    data = [{"wav": datafile_wav(wav, path.parent), "labels": ",".join(mids)} for wav, mids in rows]
    write_json(path, {"data": data})
