"""`fastast evaluate`: metrics of a checkpoint on a prepared dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastast_cli.cli._app import MaxDuration, Quiet, app, apply_max_duration, console, user_errors
from fastast_cli.cli._merging import (
    MethodOption,
    ProportionalAttentionOption,
    ScheduleOption,
    merge_r_option,
    method_name,
    schedule_name,
)
from fastast_cli.cli._torchrun import torchrun_command
from fastast_cli.cli.options import (
    BackendOption,
    DtypeOption,
    OnnxOption,
    check_dtype,
    parse_folds,
    parse_lengths,
    parse_resolutions,
)
from fastast_cli.data.checks import check_datafile
from fastast_cli.data.manifest import load_manifest
from fastast_cli.devices import resolve_device
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.epoch_logs import fold_epoch_results, read_epoch_log, run_log
from fastast_cli.evaluation.evaluate import (
    check_evaluation_out,
    check_labels,
    evaluate_checkpoint,
    evaluate_lengths,
    mean_and_std,
    save_evaluation,
)
from fastast_cli.inference.backends import check_backend
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.reduction.settings import MergeSettings, capped_note, merging_of
from fastast_cli.progress import set_progress
from fastast_cli.reports.tables import Column, check_table_target, rich_table, write_csv

METRICS = {"accuracy": "accuracy", "mAP": "mAP", "mAUC": "mAUC", "d_prime": "d'"}
COLUMNS = [Column("fold", "fold")] + [Column(key, header) for key, header in METRICS.items()]
LENGTH_COLUMNS = [Column("split", "split"), Column("length", "seconds"),
                  Column("resolution", "q", "{:g}")] + [
    Column(key, header, "{:.4f}") for key, header in METRICS.items()]


def _cells(fold: object, values: dict[str, float]) -> dict[str, str]:
    return {"fold": str(fold), **{key: f"{values[key]:.4f}" for key in METRICS}}


def merging_line(settings: MergeSettings | None) -> str:
    """How the model merged tokens, for a table title ('' for models without merging)."""
    return f"; {settings.describe()}" if settings is not None else ""


@app.command()
@user_errors
@torchrun_command({"out": None})
def evaluate(
    checkpoint: Annotated[str, typer.Option(
        help="fastast checkpoint, original AST .pth or Hugging Face AST folder. With --folds, "
        "a pattern holding {fold}, e.g. runs/esc50-fold{fold}/best.pt.")],
    data: Annotated[Path, typer.Option(help="Prepared dataset: manifest.yaml or its folder.")],
    method: MethodOption = None,
    r: Annotated[int | None, merge_r_option()] = None,
    schedule: ScheduleOption = None,
    proportional_attention: ProportionalAttentionOption = None,
    split: Annotated[str | None, typer.Option(
        help="Split to score (default: test, or eval, where the dataset has one; valid, the "
        "split best.pt is chosen on, only when asked or when it is all there is).")] = None,
    fold: Annotated[int | None, typer.Option(help=(
        "Fold of a cross-validation dataset. Default: the fold the checkpoint was trained for "
        "(another fold is refused: its clips were among the checkpoint's training clips)."))
    ] = None,
    folds: Annotated[str | None, typer.Option(
        help="Several folds, e.g. 1-5: mean ± std over folds (one checkpoint per fold), and "
        "from the log.csv beside each fold's checkpoint both ways of reporting them: AST's "
        "best epoch of the fold mean, and the last epoch.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda.")] = "auto",
    out: Annotated[Path | None, typer.Option(
        help="Folder for metrics.json, per_class.csv and predictions.csv (lengths.csv with "
        "--lengths; a folder per fold with --folds). Earlier results of evaluate there are "
        "replaced; a file of that name that evaluate did not write is refused.")] = None,
    lengths: Annotated[str | None, typer.Option(
        help="Also score clips cut to these lengths in seconds, e.g. 1,2,5,10 (full = whole "
        "clip): the ElasticAST curve. Fixed ASTs get the cut clips padded to their input.")
    ] = None,
    resolutions: Annotated[str | None, typer.Option(
        help="With --lengths (or alone): time resolutions q, frame shift 10 ms × q, e.g. "
        "1,2,4.")] = None,
    backend: BackendOption = "auto",
    onnx: OnnxOption = None,
    dtype: DtypeOption = "fp32",
    quiet: Quiet = False,
    max_duration: MaxDuration = None,
) -> None:
    """Accuracy, mAP, mAUC and d' of a checkpoint; per-class AP and predictions with --out.
    Under torchrun each process scores its shard of the clips; the first one writes."""
    set_progress(not quiet)
    check_dtype(dtype, [backend])
    apply_max_duration(max_duration)
    if folds and onnx is not None:
        raise FastASTError("--onnx is the graph of one checkpoint, --folds scores one checkpoint "
                           "per fold: leave --onnx out (each fold's checkpoint is exported into "
                           "the cache) or score one --fold")
    length_values = parse_lengths(lengths) if lengths is not None else [None]  # before work
    resolution_values = parse_resolutions(resolutions) if resolutions is not None else [1.0]
    fold_numbers = parse_folds(folds) if folds else None
    manifest = load_manifest(data)
    merging = {"r": r, "schedule": schedule_name(schedule),
               "proportional_attention": proportional_attention, "method": method_name(method)}
    split = split or manifest.eval_split
    if out is not None and lengths is None and resolutions is None:
        for number in fold_numbers or [None]:
            check_evaluation_out(out / f"fold{number}" if folds else out)
    if lengths is not None or resolutions is not None:
        if backend not in ("auto", "torch") or onnx is not None:
            raise FastASTError("--lengths and --resolutions run on the torch backend")
        length_sweep(checkpoint, manifest, length_values, resolution_values, merging=merging,
                     split=split, fold=fold, batch_size=batch_size, device=device, out=out,
                     dtype=dtype)
        return
    if folds and "{fold}" not in checkpoint:
        raise FastASTError("--folds needs a --checkpoint pattern holding {fold}, e.g. "
                           "runs/esc50-fold{fold}/best.pt")
    chosen = fold_numbers or [fold]
    if folds:  # every fold's clips, before the first fold is scored
        for number in chosen:
            check_datafile(manifest.datafile(split, number), split)
    rows, summaries, settings, notes = [], [], set(), set()
    for number in chosen:
        path = checkpoint.replace("{fold}", str(number))
        evaluation = evaluate_checkpoint(
            path, manifest, split=split, fold=number, batch_size=batch_size,
            device=resolve_device(device), backend=check_backend(backend), onnx_file=onnx,
            dtype=dtype, **merging,
        )
        settings.add(merging_line(evaluation.merging))
        notes.update(evaluation.notes())
        summaries.append(evaluation.metrics.summary())
        rows.append(_cells("-" if evaluation.fold is None else evaluation.fold, summaries[-1]))
        if out is not None:
            written = save_evaluation(evaluation, out / f"fold{number}" if folds else out)
    if len(summaries) > 1:
        spread = {key: mean_and_std([s[key] for s in summaries]) for key in METRICS}
        rows.append({"fold": "mean ± std",
                     **{key: f"{m:.4f} ± {sd:.4f}" for key, (m, sd) in spread.items()}})
    title = (f"{checkpoint} on {manifest.path}, {split} split, {dtype}"
             f"{''.join(sorted(settings))}")
    console.print(rich_table(title, rows, COLUMNS))
    if folds:
        print_epoch_results(checkpoint, chosen, evaluation.headline, manifest.selection_split)
    for note in sorted(notes):
        console.print(f"note: {note}")
    if out is not None:
        console.print(f"wrote {', '.join(path.name for path in written)} under {out}")


def print_epoch_results(checkpoint: str, folds: list[int], metric: str, split: str) -> None:
    """The folds' mean ± std from the runs' per-epoch logs (log.csv beside each fold's
    checkpoint), named: AST's best epoch of the fold-mean curve and the last epoch."""
    logs = [run_log(checkpoint.replace("{fold}", str(number))) for number in folds]
    curves = [read_epoch_log(log, metric) for log in logs]
    missing = [f"fold {number} ({log})" for number, log, curve in zip(folds, logs, curves,
                                                                     strict=True) if not curve]
    if missing:
        console.print(f"note: no per-epoch {metric} logged for {', '.join(missing)}: the "
                      "best-epoch and last-epoch means need each fold's run folder (log.csv)")
        return
    results = fold_epoch_results(curves)
    if not results:
        console.print("note: the folds' log.csv files share no epoch: no per-epoch means")
        return
    console.print(f"From the runs' per-epoch logs ({metric} on the {split} split each run "
                  "validated on; mean ± std over folds):")
    for result in results:
        console.print(f"  {result.name}: epoch {result.epoch}, "
                      f"{result.mean:.4f} ± {result.std:.4f}")


def length_sweep(checkpoint: str, manifest, lengths: list[float | None],
                 resolutions: list[float], *, merging: dict,
                 split: str, fold: int | None, batch_size: int, device: str,
                 out: Path | None, dtype: str = "fp32") -> None:
    """Metric per clip length and time resolution, as a table (and lengths.csv in --out)."""
    if out is not None:
        check_table_target(out / "lengths.csv", LENGTH_COLUMNS)
    model = load_classifier(checkpoint, device=resolve_device(device), **merging)
    check_labels(model, manifest, checkpoint)
    note = capped_note(model)
    if note:
        console.print(note)
    rows = evaluate_lengths(model, manifest, lengths, resolutions,
                            split=split, fold=fold, batch_size=batch_size,
                            device=resolve_device(device), dtype=dtype)
    title = (f"{checkpoint} by clip length and time resolution, {split} split, {dtype}"
             f"{merging_line(merging_of(model))}")
    console.print(rich_table(title, rows, LENGTH_COLUMNS))
    if out is not None:
        write_csv(out / "lengths.csv", rows, LENGTH_COLUMNS)
        console.print(f"wrote {out / 'lengths.csv'}")
