"""Evaluate a checkpoint on a prepared dataset: metrics, per-class AP and saved predictions."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastast_cli.atomic import atomic_path, check_output, output_folder, write_json
from fastast_cli.data.checks import check_clips
from fastast_cli.data.dataset import ASTDataset, NativeLengthDataset
from fastast_cli.data.elastic_features import collate_native
from fastast_cli.data.manifest import Manifest
from fastast_cli.devices import DTYPES
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.metrics import (
    Metrics,
    class_accuracy,
    compute_metrics,
    confusion,
    is_single_label,
)
from fastast_cli.evaluation.predict import predict_dataset
from fastast_cli.inference.backends import Forward, make_forward
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.inputs import InputSpec, resolved_input
from fastast_cli.models.reduction.settings import MergeSettings, capped_note, merging_of
from fastast_cli.reports.tables import Column, check_table_target, write_csv

PathLike = str | os.PathLike[str]

PER_CLASS_COLUMNS = [Column("index", "index"), Column("label", "label"),
                     Column("ap", "AP", "{:.6f}"), Column("auc", "AUC", "{:.6f}"),
                     Column("split", "split")]
CLASS_ACCURACY_COLUMNS = [Column("index", "index"), Column("label", "label"),
                          Column("clips", "clips"), Column("correct", "correct"),
                          Column("accuracy", "accuracy", "{:.6f}"), Column("split", "split")]
CONFUSION_FIRST = "true"  # confusion.csv: this column, then one per predicted class
PREDICTION_COLUMNS = [Column("clip", "clip"), Column("split", "split"),
                      Column("predicted", "predicted"), Column("target", "target"),
                      Column("logits", "logits")]


@dataclass
class Evaluation:
    """One checkpoint on one split: its metrics and the predictions behind them."""

    checkpoint: str
    split: str
    fold: int | None
    metrics: Metrics
    logits: torch.Tensor  # [N, C]
    targets: torch.Tensor  # [N, C]
    clips: list[str]
    labels: list[str]
    merging: MergeSettings | None = None  # token merging the model ran with (ASTs)
    stats_note: str | None = None  # where the input mean/std came from, when it was assumed
    capped_note: str | None = None  # r asks for more merging than the tokens allow
    headline: str = "accuracy"  # the checkpoint's headline metric (`headline_metric`)
    dtype: str = "fp32"  # the precision the model ran in (devices.DTYPES)
    backend_note: str | None = None  # what `--backend auto` picked and why

    @property
    def excluded_classes(self) -> list[str]:
        """Names of the classes without a positive clip in this split (not in mAP)."""
        return [self.labels[c] for c in self.metrics.classes_without_positives]

    def notes(self) -> list[str]:
        """What a reader of the numbers must know: assumed input statistics, classes that mAP
        leaves out, merging capped by the token count."""
        notes = [self.stats_note] if self.stats_note else []
        excluded = self.excluded_classes
        if excluded:
            total = len(self.labels)
            notes.append(
                f"mAP averages {total - len(excluded)} of {total} classes: "
                f"{len(excluded)} have no positive clip in the {self.split} split and are left "
                f"out (scikit-learn's macro average would count them as AP 0): "
                f"{', '.join(excluded)}")
        if self.capped_note:
            notes.append(self.capped_note.removeprefix("note: "))
        if self.backend_note:
            notes.append(self.backend_note)
        return notes


def evaluation_dtype(name: str) -> torch.dtype:
    """The precision a model is scored in: fp32 (as AST validates), fp16 or bf16 (autocast)."""
    if name not in DTYPES:
        raise FastASTError(f"--dtype {name!r}: choose {', '.join(DTYPES)}")
    return DTYPES[name]


def input_spec_on(model: nn.Module, manifest: Manifest, fold: int | None) -> InputSpec:
    """What `model` takes, normalized as it was trained (its checkpoint's statistics), else
    with the dataset's (the fold's)."""
    return resolved_input(model, lambda: manifest.norm_stats(fold))


def check_mel_bins(spec: InputSpec, manifest: Manifest) -> None:
    """A model made for fbanks of other mel bins than the dataset's cannot score it."""
    if spec.num_mel_bins != manifest.num_mel_bins:
        raise FastASTError(
            f"the model takes fbanks of {spec.num_mel_bins} mel bins but {manifest.path} was "
            f"prepared with {manifest.num_mel_bins}")


def check_labels(model: nn.Module, manifest: Manifest, checkpoint: PathLike) -> None:
    """The model must predict the dataset's classes, in the same order when it names them."""
    labels = list(getattr(model, "labels", []) or [])
    classes = model.config.num_classes
    if classes != manifest.num_classes:
        raise FastASTError(
            f"{checkpoint} predicts {classes} classes but {manifest.path} has "
            f"{manifest.num_classes}"
        )
    if labels and labels != manifest.label_names:
        raise FastASTError(f"{checkpoint} was trained on other labels than {manifest.path}")


def headline_metric(model: nn.Module, manifest: Manifest) -> str:
    """A checkpoint's headline metric: the one it was selected by, else mAP for AudioSet and
    accuracy for the other datasets."""
    chosen = (getattr(model, "meta", {}) or {}).get("metric")
    if chosen in ("accuracy", "mAP"):
        return chosen
    return "mAP" if manifest.dataset == "audioset" else "accuracy"


def scored_fold(model: nn.Module, manifest: Manifest, fold: int | None, name: str) -> int | None:
    """The fold to score: the one asked for, else the one the checkpoint was trained for.

    A checkpoint trained for another fold of this dataset (or on another preparation of it) is
    refused: its training clips include this fold's evaluation clips.
    """
    meta = getattr(model, "meta", None) or {}
    if not manifest.folds or meta.get("fold") is None:
        return fold
    if meta.get("data_identity") != manifest.identity:
        raise FastASTError(
            f"{name} was trained on another preparation of the data "
            f"({meta.get('data_identity')}, here {manifest.identity}): its folds may hold these "
            "evaluation clips"
        )
    trained = int(meta["fold"])
    if fold is not None and fold != trained:
        raise FastASTError(
            f"{name} was trained for fold {trained}, so fold {fold}'s evaluation clips were "
            f"among its training clips: score it on fold {trained} (or use fold {fold}'s "
            "checkpoint)"
        )
    return trained


def evaluate_checkpoint(
    checkpoint: PathLike,
    manifest: Manifest,
    *,
    split: str | None = None,
    fold: int | None = None,
    r: int | None = None,
    schedule: str | None = None,
    proportional_attention: bool | None = None,
    method: str | None = None,
    batch_size: int = 32,
    device: torch.device | None = None,
    num_workers: int = 0,
    backend: str = "torch",
    onnx_file: PathLike | None = None,
    dtype: str = "fp32",
) -> Evaluation:
    """Load `checkpoint` and score it on `split` of `manifest`, run by `backend` (auto, torch,
    compile or onnxruntime; `onnx_file`: an exported graph for onnxruntime) in precision `dtype`
    (`evaluation_dtype`). ASTs merge tokens as their checkpoint records, unless `r`,
    `schedule`, `proportional_attention` or `method` say otherwise."""
    device = device or torch.device("cpu")
    model = load_classifier(checkpoint, r, schedule=schedule,
                            proportional_attention=proportional_attention, method=method,
                            device=device)
    check_labels(model, manifest, checkpoint)
    forward = make_forward(model, backend, onnx_file=onnx_file, batch_size=batch_size,
                           dtype=evaluation_dtype(dtype))
    evaluation = evaluate_model(model, manifest, str(checkpoint), split=split, fold=fold,
                                batch_size=batch_size, device=device, num_workers=num_workers,
                                forward=forward, dtype=dtype)
    evaluation.capped_note = capped_note(model)
    choice = getattr(forward, "choice", None)
    evaluation.backend_note = choice.describe() if choice is not None else None
    return evaluation


def evaluate_model(
    model: nn.Module,
    manifest: Manifest,
    name: str,
    *,
    split: str | None = None,
    fold: int | None = None,
    batch_size: int = 32,
    device: torch.device | None = None,
    num_workers: int = 0,
    forward: Forward | None = None,
    dtype: str = "fp32",
) -> Evaluation:
    """Score a loaded model (at its current merging rate) on `split` of `manifest`; `forward`
    (from `make_forward`) runs it on another backend; `dtype`: fp32 (the default, as AST
    validates), fp16 or bf16 (autocast)."""
    device = device or torch.device("cpu")
    split = split or manifest.eval_split
    fold = scored_fold(model, manifest, fold, name)
    spec = input_spec_on(model, manifest, fold)
    check_mel_bins(spec, manifest)
    elastic = spec.native_length
    options = {"target_length": spec.target_length, "mean": spec.mean, "std": spec.std,
               "num_mel_bins": manifest.num_mel_bins}
    dataset: ASTDataset = (  # native: whole clips at their own length
        NativeLengthDataset(manifest.datafile(split, fold), manifest.labels_csv,
                            length=spec.length_policy(), **options)
        if elastic else ASTDataset(manifest.datafile(split, fold), manifest.labels_csv, **options))
    check_clips(dataset.entries, dataset.datafile, split)
    logits, targets = predict_dataset(model, dataset, batch_size, device,
                                      evaluation_dtype(dtype), num_workers=num_workers,
                                      collate_fn=collate_native if elastic else None,
                                      forward=forward)
    metrics = compute_metrics(logits.numpy(), targets.numpy(),
                              [str(entry.wav) for entry in dataset.entries])
    clips = [str(entry.wav) for entry in dataset.entries]
    return Evaluation(name, split, fold, metrics, logits, targets, clips, manifest.label_names,
                      merging_of(model),
                      spec.stats_note, headline=headline_metric(model, manifest), dtype=dtype)


def check_evaluation_out(out: Path) -> None:
    """Before any work: `out` is a writable folder, and the files `save_evaluation` writes are
    absent or its own (a metrics.json or CSV of another kind is the user's, never replaced)."""
    check_output(out, folder=True)
    check_table_target(out / "per_class.csv", PER_CLASS_COLUMNS)
    check_table_target(out / "predictions.csv", PREDICTION_COLUMNS)
    check_table_target(out / "class_accuracy.csv", CLASS_ACCURACY_COLUMNS)
    check_confusion_target(out / "confusion.csv")
    metrics = out / "metrics.json"
    check_output(metrics, folder=False)
    if metrics.exists():
        try:
            content = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            content = None
        if not (isinstance(content, dict) and {"checkpoint", "split"} <= content.keys()):
            raise FastASTError(f"{metrics} exists and is not an evaluation's metrics.json: "
                               "remove it or pick another --out")


def check_confusion_target(path: Path) -> None:
    """confusion.csv is absent or a confusion table (its first column `true`), never a file of
    the user's."""
    check_output(path, folder=False)
    if path.exists():
        try:
            with path.open(newline="", encoding="utf-8") as stream:
                header = next(csv.reader(stream), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []
        if header[:1] != [CONFUSION_FIRST]:
            raise FastASTError(f"{path} exists and is not an evaluation's confusion table: "
                               "remove it or pick another --out")


def save_evaluation(evaluation: Evaluation, out: Path) -> list[Path]:
    """metrics.json, per_class.csv (AP and AUC per class) and predictions.csv (one row a clip);
    for single-label data also confusion.csv (`save_confusion`) and class_accuracy.csv; a
    folder made here and left empty by a failed write is removed."""
    with output_folder(out):
        return _save_evaluation(evaluation, out)


def _save_evaluation(evaluation: Evaluation, out: Path) -> list[Path]:
    metrics = evaluation.metrics
    merging = evaluation.merging
    summary = {"checkpoint": evaluation.checkpoint, "split": evaluation.split,
               "fold": evaluation.fold, "dtype": evaluation.dtype, **metrics.summary(),
               "map_classes": len(evaluation.labels) - len(evaluation.excluded_classes),
               "classes_without_positives": evaluation.excluded_classes,
               "merging": None if merging is None else
               {**merging.to_meta(), "source": merging.source}}
    write_json(out / "metrics.json", summary, indent=2)
    split = evaluation.split
    per_class = [
        {"index": i, "label": name, "ap": metrics.per_class_ap[i], "auc": metrics.per_class_auc[i],
         "split": split}
        for i, name in enumerate(evaluation.labels)
    ]
    write_csv(out / "per_class.csv", per_class, PER_CLASS_COLUMNS)
    top = evaluation.logits.argmax(dim=1).tolist()
    truth = evaluation.targets.argmax(dim=1).tolist()
    predictions = [
        {"clip": clip, "split": split, "predicted": evaluation.labels[p],
         "target": evaluation.labels[t], "logits": " ".join(f"{v:.5f}" for v in row)}
        for clip, p, t, row in zip(evaluation.clips, top, truth, evaluation.logits.tolist(),
                                   strict=True)
    ]
    write_csv(out / "predictions.csv", predictions, PREDICTION_COLUMNS)
    written = [out / "metrics.json", out / "per_class.csv", out / "predictions.csv"]
    if is_single_label(evaluation.targets.numpy()):
        written += save_confusion(evaluation, out)
    return written


def save_confusion(evaluation: Evaluation, out: Path) -> list[Path]:
    """confusion.csv (row: true class, then the clips predicted as each class) and
    class_accuracy.csv (clips, correct and accuracy of each class) of a single-label split."""
    counts = confusion(evaluation.logits.numpy(), evaluation.targets.numpy())
    labels = evaluation.labels
    with atomic_path(out / "confusion.csv") as temporary, temporary.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([CONFUSION_FIRST, *labels])  # header: the predicted classes
        writer.writerows([name, *counts[i].tolist()] for i, name in enumerate(labels))
    accuracy = class_accuracy(counts)
    per_class = [{"index": i, "label": name, "clips": int(counts[i].sum()),
                  "correct": int(counts[i, i]),
                  "accuracy": None if math.isnan(accuracy[i]) else accuracy[i],
                  "split": evaluation.split}
                 for i, name in enumerate(labels)]
    write_csv(out / "class_accuracy.csv", per_class, CLASS_ACCURACY_COLUMNS)
    return [out / "confusion.csv", out / "class_accuracy.csv"]


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), as fold results are reported."""
    if len(values) == 1:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values)


def evaluate_lengths(
    model: nn.Module,
    manifest: Manifest,
    lengths: Sequence[float | None],
    resolutions: Sequence[float],
    *,
    split: str | None = None,
    fold: int | None = None,
    batch_size: int = 32,
    device: torch.device | None = None,
    dtype: str = "fp32",
) -> list[dict[str, float | str]]:
    """Metrics with clips cut to each length (seconds; None = whole clip) at each time
    resolution q (frame shift 10 ms × q): the ElasticAST curve, on `split` (default: the
    dataset's reporting split).

    An ElasticAST reads each clip at its own length; a fixed AST gets the same clips padded or
    cut to its input length, as it must. One row per (length, q).
    """
    device = device or torch.device("cpu")
    if not model.merges_tokens:
        raise FastASTError("--lengths and --resolutions compare AST and ElasticAST checkpoints")
    fold = scored_fold(model, manifest, fold, "the checkpoint")
    spec = input_spec_on(model, manifest, fold)
    check_mel_bins(spec, manifest)
    elastic = spec.native_length
    split = split or manifest.eval_split
    rows: list[dict[str, float | str]] = []
    for seconds in lengths:
        for q in resolutions:
            dataset = NativeLengthDataset(
                manifest.datafile(split, fold), manifest.labels_csv,
                target_length=spec.target_length, mean=spec.mean, std=spec.std,
                num_mel_bins=manifest.num_mel_bins, resolutions=(q, q), seconds=seconds,
                length=spec.length_policy(),
            )
            check_clips(dataset.entries, dataset.datafile, split or manifest.eval_split)
            logits, targets = predict_dataset(
                model, dataset, batch_size, device, evaluation_dtype(dtype),
                collate_fn=collate_native if elastic else None,
            )
            metrics = compute_metrics(logits.numpy(), targets.numpy(),
                              [str(entry.wav) for entry in dataset.entries])
            rows.append({"split": split, "length": "full" if seconds is None else f"{seconds:g}",
                         "resolution": q, **metrics.summary()})
    return rows


