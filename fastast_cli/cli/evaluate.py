"""`fastast evaluate`: metrics of a checkpoint on a prepared dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastast_cli.cli._app import app, console, user_errors
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation.evaluate import (
    evaluate_checkpoint,
    mean_and_std,
    parse_folds,
    save_evaluation,
)
from fastast_cli.evaluation.throughput import resolve_device
from fastast_cli.reports.tables import Column, rich_table

METRICS = {"accuracy": "accuracy", "mAP": "mAP", "mAUC": "mAUC", "d_prime": "d'"}
COLUMNS = [Column("fold", "fold")] + [Column(key, header) for key, header in METRICS.items()]


def _cells(fold: object, values: dict[str, float]) -> dict[str, str]:
    return {"fold": str(fold), **{key: f"{values[key]:.4f}" for key in METRICS}}


@app.command()
@user_errors
def evaluate(
    checkpoint: Annotated[str, typer.Option(
        help="fastast checkpoint, original AST .pth or Hugging Face AST folder. With --folds, "
        "a pattern holding {fold}, e.g. runs/esc50-fold{fold}/best.pt.")],
    data: Annotated[Path, typer.Option(help="Prepared dataset: manifest.yaml or its folder.")],
    r: Annotated[int, typer.Option("--r", min=0, help="Tokens merged per block (ToMe).")] = 0,
    split: Annotated[str | None, typer.Option(
        help="Split to score (default: eval, valid or test, whichever the dataset has).")] = None,
    fold: Annotated[int | None, typer.Option(help="Fold of a cross-validation dataset.")] = None,
    folds: Annotated[str | None, typer.Option(
        help="Several folds, e.g. 1-5: mean ± std over folds (one checkpoint per fold).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda.")] = "auto",
    out: Annotated[Path | None, typer.Option(
        help="Folder for metrics.json, per_class.csv and predictions.csv.")] = None,
) -> None:
    """Accuracy, mAP, mAUC and d' of a checkpoint; per-class AP and predictions with --out."""
    manifest = load_manifest(data)
    chosen = parse_folds(folds) if folds else [fold]
    rows, summaries = [], []
    for number in chosen:
        path = checkpoint.format(fold=number) if folds else checkpoint
        evaluation = evaluate_checkpoint(
            path, manifest, split=split, fold=number, r=r, batch_size=batch_size,
            device=resolve_device(device),
        )
        summaries.append(evaluation.metrics.summary())
        rows.append(_cells("-" if number is None else number, summaries[-1]))
        if out is not None:
            save_evaluation(evaluation, out / f"fold{number}" if folds else out)
    if len(summaries) > 1:
        spread = {key: mean_and_std([s[key] for s in summaries]) for key in METRICS}
        rows.append({"fold": "mean ± std",
                     **{key: f"{m:.4f} ± {sd:.4f}" for key, (m, sd) in spread.items()}})
    console.print(rich_table(f"{checkpoint} on {manifest.path} (r={r})", rows, COLUMNS))
    if out is not None:
        console.print(f"wrote metrics.json, per_class.csv and predictions.csv under {out}")
