"""Metrics against scikit-learn on fixed predictions, ties and missing classes included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from fastast_cli.evaluation.metrics import compute_metrics, d_prime


def fixed_predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    targets = (rng.random((60, 5)) < 0.3).astype(float)
    scores = rng.normal(size=(60, 5)) + 1.5 * targets
    scores[:, 2] = np.round(scores[:, 2])  # many tied scores
    return scores, targets


def test_map_and_mauc_equal_sklearn():
    scores, targets = fixed_predictions()
    metrics = compute_metrics(scores, targets)
    for c in range(5):
        assert metrics.per_class_ap[c] == pytest.approx(
            average_precision_score(targets[:, c], scores[:, c]), abs=1e-12)
        assert metrics.per_class_auc[c] == pytest.approx(
            roc_auc_score(targets[:, c], scores[:, c]), abs=1e-12)
    assert metrics.mAP == pytest.approx(average_precision_score(targets, scores, average="macro"))
    assert metrics.mAUC == pytest.approx(roc_auc_score(targets, scores, average="macro"))
    assert metrics.d_prime == pytest.approx(math.sqrt(2) * norm.ppf(metrics.mAUC))


def test_accuracy_and_known_values():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    targets = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=float)
    metrics = compute_metrics(scores, targets)
    assert metrics.accuracy == 0.5
    # class 0 ranked: 0.9(+) 0.6(-) 0.3(+) 0.2(-): AP = (1/1 + 2/3) / 2
    assert metrics.per_class_ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.per_class_auc[0] == pytest.approx(0.75)
    assert d_prime(0.5) == 0.0
    assert d_prime(0.76025) == pytest.approx(1.0, abs=1e-3)  # Φ(1/√2) = 0.76025


def test_class_without_positives_is_left_out():
    scores, targets = fixed_predictions()
    targets[:, 4] = 0
    metrics = compute_metrics(scores, targets)
    assert math.isnan(metrics.per_class_ap[4]) and math.isnan(metrics.per_class_auc[4])
    assert metrics.mAP == pytest.approx(np.mean(metrics.per_class_ap[:4]))
