"""ESC-50 (and any data in its layout): 5-fold cross-validation datafiles at 16 kHz.

Layout: `<root>/audio/*.wav` and `<root>/meta/esc50.csv` with columns
`filename,fold,target,category,...`. Fold k: train = every other fold, eval = fold k.
Labels: index = target, mid `/m/07rwj{target:02d}`, display name = category.

Normalization: the fbank sums of every clip are measured once, so each fold's mean/std is the
exact value of its own training split (stored per fold in the manifest); the top-level mean/std
is measured on all clips (the union of the training splits).
"""

from __future__ import annotations

import csv
from pathlib import Path

from fastast_cli.data.manifest import Fold
from fastast_cli.data.prepare.conversion import Clip, converted_name, process_clips, sum_stats
from fastast_cli.data.prepare.outputs import finish, write_labels, write_split
from fastast_cli.data.prepare.sources import resolve_source
from fastast_cli.data.prepare.workspace import PrepareReport, Workspace
from fastast_cli.data.safepath import resolve_under, stays_under
from fastast_cli.errors import FastASTError

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
ESC50_CHECKSUM = "md5:629e8e9ebc1592bcceb06da6bec40275"
ESC50_TARGET_LENGTH = 512
META = "meta/esc50.csv"
META_COLUMNS = ("filename", "fold", "target", "category")
WHAT = "ESC-50 (ESC-50-master.zip or its extracted folder)"


def read_meta(root: Path) -> list[tuple[str, int, int, str]]:
    """Rows (filename, fold, target, category) of `<root>/meta/esc50.csv`."""
    path = root / META
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in META_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FastASTError(
                f"{path}: expected columns {','.join(META_COLUMNS)}; missing {','.join(missing)}"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    (
                        row["filename"].strip(),
                        int(row["fold"]),
                        int(row["target"]),
                        row["category"].strip(),
                    )
                )
            except (TypeError, ValueError):
                raise FastASTError(f"{path}:{line}: fold and target must be integers") from None
    if not rows:
        raise FastASTError(f"{path}: lists no clips")
    return rows


def audio_path(root: Path, name: str) -> Path | None:
    """`<root>/audio/<name>` resolved, or None if `name` leads outside it (absolute, `..`) or a
    link takes it out of `root`."""
    source = resolve_under(root / "audio", name)
    return source if source is not None and stays_under(root, source) else None


def class_names(rows: list[tuple[str, int, int, str]], meta: Path) -> list[str]:
    """Category of each target 0..N-1; targets must be contiguous from 0."""
    names = {target: category for _, _, target, category in rows}
    if sorted(names) != list(range(len(names))):
        raise FastASTError(f"{meta}: targets must be 0..N-1, found {sorted(names)}")
    return [names[t] for t in range(len(names))]


def prepare_fold_layout(
    root: Path, workspace: Workspace, *, mid_prefix: str = "/m/07rwj", recipe: str | None = None
) -> PrepareReport:
    """Prepare data in ESC-50 layout under `root` into `workspace` (folds from the meta file).

    A `filename` that leads outside `<root>/audio/` is refused (listed in prepare.log).
    """
    rows = read_meta(root)
    names = class_names(rows, root / META)
    mids = [f"{mid_prefix}{t:02d}" for t in range(len(names))]
    sources = [audio_path(root, name) for name, *_ in rows]
    for (name, *_), source in zip(rows, sources, strict=True):
        if source is None:
            workspace.refuse(name, root / META)
    rows = [row for row, source in zip(rows, sources, strict=True) if source is not None]
    clips = [
        Clip(source, [mids[target]], converted_name(Path(name)), True)
        for (name, _, target, _), source in zip(rows, filter(None, sources), strict=True)
    ]
    results = process_clips(clips, workspace)
    labels = write_labels(workspace, mids, names)
    fold_numbers = sorted({fold for _, fold, _, _ in rows})
    if len(fold_numbers) < 2:
        raise workspace.fail(f"{root / META}: needs at least 2 folds, found {fold_numbers}")
    folds = {}
    for k in fold_numbers:
        train = [p for p, row in enumerate(rows) if row[1] != k]
        evaluation = [p for p, row in enumerate(rows) if row[1] == k]
        mean, std = sum_stats(workspace, results, train)
        folds[k] = Fold(
            write_split(workspace, f"fold{k}_train", clips, results, train),
            write_split(workspace, f"fold{k}_eval", clips, results, evaluation),
            mean,
            std,
        )
    mean, std = sum_stats(workspace, results, range(len(rows)))
    return finish(
        workspace,
        labels=labels,
        splits={},
        mean=mean,
        std=std,
        folds=folds,
        recipe=recipe,
        norm_measured_on="all clips (every fold's training split)",
    )


def prepare_esc50(
    src: Path | None,
    out: Path,
    *,
    download: bool = False,
    url: str = ESC50_URL,
    checksum: str | None = None,
    target_length: int = ESC50_TARGET_LENGTH,
) -> PrepareReport:
    """Prepare ESC-50 from `src` (zip or folder; downloaded first with `download`) into `out`.

    `checksum` is checked as `resolve_source` says (the official one for a download).
    """
    workspace = Workspace.open(out, "esc50", target_length)
    root = resolve_source(
        src,
        workspace,
        required=[META, "audio"],
        what=WHAT,
        url=url,
        checksum=checksum,
        official_checksum=ESC50_CHECKSUM,
        archive_name="ESC-50-master.zip",
        fetch=download,
    )
    return prepare_fold_layout(root, workspace, recipe="esc50")
