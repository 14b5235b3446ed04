"""Classification metrics of the AST papers: accuracy, mAP, mAUC, d′ and per-class AP.

Computed in NumPy with the same definitions as scikit-learn's `average_precision_score` and
`roc_auc_score` (every distinct score is a threshold; tied scores move together), so numbers
compare with AST's published ones; the tests check them against scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it


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


def _threshold_counts(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct score threshold, highest threshold first."""
    order = np.argsort(-scores, kind="mergesort")
    scores, positives = scores[order], positives[order]
    last_of_value = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    true_positives = np.cumsum(positives)[last_of_value]
    false_positives = last_of_value + 1 - true_positives
    return true_positives, false_positives


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the step precision-recall curve, Σ (R_n − R_{n−1}) P_n. NaN without positives."""
    true_positives, false_positives = _threshold_counts(scores, positives)
    if true_positives[-1] == 0:
        return math.nan
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids). NaN when one of the two classes is absent."""
    true_positives, false_positives = _threshold_counts(scores, positives)
    if true_positives[-1] == 0 or false_positives[-1] == 0:
        return math.nan
    tpr = np.r_[0.0, true_positives / true_positives[-1]]
    fpr = np.r_[0.0, false_positives / false_positives[-1]]
    return float(_trapezoid(tpr, fpr))


def d_prime(auc: float) -> float:
    """Sensitivity index d′ = √2 · Φ⁻¹(AUC)."""
    if math.isnan(auc) or not 0.0 < auc < 1.0:
        return math.nan
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def compute_metrics(predictions: np.ndarray, targets: np.ndarray) -> Metrics:
    """All metrics for scores `predictions` [N, C] (logits or probabilities) and 0/1 `targets`.

    Accuracy compares argmaxes (targets may be soft); AP and AUC take targets > 0.5 as positives.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if predictions.shape != targets.shape or predictions.ndim != 2:
        raise ValueError(
            f"predictions {predictions.shape} and targets {targets.shape} must both be [N, C]"
        )
    positives = targets > 0.5
    accuracy = float(np.mean(predictions.argmax(1) == targets.argmax(1)))
    per_class_ap = [average_precision(predictions[:, c], positives[:, c])
                    for c in range(targets.shape[1])]
    per_class_auc = [roc_auc(predictions[:, c], positives[:, c]) for c in range(targets.shape[1])]
    mean_ap = float(np.nanmean(per_class_ap)) if not np.all(np.isnan(per_class_ap)) else math.nan
    mean_auc = float(np.nanmean(per_class_auc)) if not np.all(np.isnan(per_class_auc)) else math.nan
    return Metrics(accuracy, mean_ap, mean_auc, d_prime(mean_auc), per_class_ap, per_class_auc)
