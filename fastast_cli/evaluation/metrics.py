"""Classification metrics of the AST papers: accuracy, mAP, mAUC, d′ and per-class AP.

AP and AUC come from scikit-learn (`average_precision_score`, `roc_auc_score`), as in AST's own
evaluation code, so numbers compare with AST's published ones. One difference from
scikit-learn's macro averages: a class with no positive (or no negative) example has no AP (or
AUC); it is NaN in the per-class lists and left out of the means instead of counting as 0.
scikit-learn is imported where a metric is computed: with SciPy it takes ~1.6 s, which commands
that compute none (predict, export, a usage error) do not pay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from fastast_cli.errors import NonFiniteScores


@dataclass
class Metrics:
    """Scores of predictions [N, C] against targets [N, C].

    Classes without any positive (or without any negative) example have no AP (or AUC) and are
    left out of the means; their per-class entries are NaN.
    """

    accuracy: float
    mAP: float
    mAUC: float
    d_prime: float
    per_class_ap: list[float] = field(repr=False)
    per_class_auc: list[float] = field(repr=False)

    def summary(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "mAP": self.mAP, "mAUC": self.mAUC,
                "d_prime": self.d_prime}

    @property
    def classes_without_positives(self) -> list[int]:
        """Classes left out of mAP (no positive example). scikit-learn's
        `average_precision_score(average="macro")` would count each as AP 0 instead."""
        return [c for c, ap in enumerate(self.per_class_ap) if math.isnan(ap)]


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the step precision-recall curve, Σ (R_n − R_{n−1}) P_n, of scores [N] for
    0/1 `positives` [N]. NaN without positives."""
    if not positives.any():
        return math.nan
    from sklearn.metrics import average_precision_score
    return float(average_precision_score(positives, scores))


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of scores [N] for 0/1 `positives` [N]. NaN when one of the two
    classes is absent."""
    if positives.all() or not positives.any():
        return math.nan
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(positives, scores))


def d_prime(auc: float) -> float:
    """Sensitivity index d′ = √2 · Φ⁻¹(AUC)."""
    if math.isnan(auc) or not 0.0 < auc < 1.0:
        return math.nan
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def _clip_name(names: Sequence[str] | None, row: int) -> str:
    return names[row] if names is not None and row < len(names) else f"clip {row}"


def nan_mean(values: list[float]) -> float:
    """Mean of the values that are not NaN; NaN when all are."""
    kept = [value for value in values if not math.isnan(value)]
    return float(np.mean(kept)) if kept else math.nan


def compute_metrics(predictions: np.ndarray, targets: np.ndarray,
                    names: Sequence[str] | None = None) -> Metrics:
    """All metrics for scores `predictions` [N, C] (logits or probabilities) and 0/1 `targets`.

    Accuracy compares argmaxes (targets may be soft); AP and AUC take targets > 0.5 as positives.
    Scores that are not finite raise NonFiniteScores (naming the first such clip of `names`).
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if predictions.shape != targets.shape or predictions.ndim != 2:
        raise ValueError(
            f"predictions {predictions.shape} and targets {targets.shape} must both be [N, C]"
        )
    if not np.isfinite(predictions).all():
        rows = np.flatnonzero(~np.isfinite(predictions).all(axis=1))
        raise NonFiniteScores(
            f"the model's scores are not finite (NaN or infinite) for {len(rows)} of "
            f"{len(predictions)} clips (first: {_clip_name(names, rows[0])}): no metric can be "
            "computed; its weights or input statistics are damaged, or the audio overflows them")
    positives = targets > 0.5
    from sklearn.metrics import accuracy_score
    accuracy = float(accuracy_score(targets.argmax(1), predictions.argmax(1)))
    per_class_ap = [average_precision(predictions[:, c], positives[:, c])
                    for c in range(targets.shape[1])]
    per_class_auc = [roc_auc(predictions[:, c], positives[:, c]) for c in range(targets.shape[1])]
    mean_auc = nan_mean(per_class_auc)
    return Metrics(accuracy, nan_mean(per_class_ap), mean_auc, d_prime(mean_auc), per_class_ap,
                   per_class_auc)


def is_single_label(targets: np.ndarray) -> bool:
    """Whether every clip of targets [N, C] has exactly one class (ESC-50, Speech Commands),
    the case where a confusion matrix and per-class accuracy mean something."""
    return len(targets) > 0 and bool(((targets > 0).sum(axis=1) == 1).all())


def confusion(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Confusion counts [C, C] of single-label predictions: row = true class, column = the
    top-scoring class (scikit-learn's `confusion_matrix`); the diagonal holds the correct
    clips, row sums the clips of each class."""
    classes = np.arange(targets.shape[1])
    from sklearn.metrics import confusion_matrix
    return confusion_matrix(targets.argmax(axis=1), scores.argmax(axis=1), labels=classes)


def class_accuracy(counts: np.ndarray) -> list[float]:
    """Per-class accuracy (recall) of confusion counts [C, C]: correct / clips of the class,
    NaN for a class without clips."""
    clips = counts.sum(axis=1)
    return [float(counts[c, c] / clips[c]) if clips[c] else math.nan for c in range(len(counts))]
