"""What a `prepare` run leaves behind: datafiles per split, the labels CSV and manifest.yaml."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fastast_cli.atomic import write_text
from fastast_cli.data.datafile import write_datafile, write_labels_csv
from fastast_cli.data.features import SAMPLE_RATE
from fastast_cli.data.manifest import Fold, Manifest, write_manifest
from fastast_cli.data.prepare.conversion import Clip, ClipResult
from fastast_cli.data.prepare.workspace import LABELS_NAME, PrepareReport, Workspace, format_log


def write_split(
    workspace: Workspace,
    name: str,
    clips: Sequence[Clip],
    results: dict[int, ClipResult],
    positions: Iterable[int],
) -> Path:
    """Write `datafiles/<name>.json` for the prepared clips at `positions`; count them."""
    rows = [(results[p].wav, clips[p].mids) for p in positions if p in results]
    path = workspace.out / "datafiles" / f"{name}.json"
    write_datafile(path, rows)
    workspace.report.counts[name] = len(rows)
    return path


def write_labels(workspace: Workspace, mids: list[str], names: list[str]) -> Path:
    """Write the labels CSV at the output root."""
    path = workspace.out / LABELS_NAME
    write_labels_csv(path, mids, names)
    return path


def finish(
    workspace: Workspace,
    *,
    labels: Path,
    splits: dict[str, Path],
    mean: float,
    std: float,
    folds: dict[int, Fold] | None = None,
    recipe: str | None = None,
    norm_measured_on: str = "train",
    extras: dict[str, Any] | None = None,
) -> PrepareReport:
    """Write manifest.yaml and prepare.log; return the completed report."""
    report = workspace.report
    report.mean, report.std = mean, std
    datafiles = [*splits.values(), *(p for f in (folds or {}).values() for p in (f.train, f.eval))]
    empty = [path.stem for path in datafiles if report.counts.get(path.stem) == 0]
    if empty:
        report.warnings.append(
            f"empty datafile(s): {', '.join(empty)}; a run that reads them has no clips "
            "to train or evaluate on"
        )
    manifest = Manifest(
        path=report.manifest,
        dataset=report.dataset,
        sample_rate=SAMPLE_RATE,
        num_mel_bins=workspace.num_mel_bins,
        target_length=workspace.target_length,
        labels_csv=labels,
        mean=mean,
        std=std,
        splits=splits,
        folds=folds or {},
        default_fold=min(folds) if folds else None,
        recipe=recipe or report.dataset,
        norm_measured_on=norm_measured_on,
        counts=report.counts,
        extras=extras or {},
        label_names=_label_names(labels),
    )
    write_manifest(manifest)
    write_text(report.log, format_log(report))
    return report


def _label_names(labels: Path) -> list[str]:
    """Display names from the labels CSV just written (for num_classes in the manifest)."""
    from fastast_cli.data.datafile import read_labels_csv

    return list(read_labels_csv(labels).names)
