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


def test_same_numbers_as_the_numpy_metrics_before_scikit_learn():
    """Values the hand-written NumPy metrics gave on this data (ties, a class with no positive)."""
    rng = np.random.default_rng(3)
    targets = (rng.random((40, 4)) < 0.3).astype(float)
    targets[:, 3] = 0
    scores = rng.normal(size=(40, 4)) + targets
    scores[:, 1] = np.round(scores[:, 1])
    metrics = compute_metrics(scores, targets)
    assert metrics.accuracy == 0.4
    assert metrics.mAP == pytest.approx(0.5201026140822983, abs=1e-12)
    assert metrics.mAUC == pytest.approx(0.7297199328449328, abs=1e-12)
    assert metrics.d_prime == pytest.approx(0.8654508703691987, abs=1e-12)
    assert metrics.per_class_ap[:3] == pytest.approx(
        [0.5578279560616517, 0.4788935766614338, 0.5235863095238096], abs=1e-12)
    assert metrics.per_class_auc[:3] == pytest.approx(
        [0.7916666666666667, 0.6318681318681318, 0.765625], abs=1e-12)
    assert metrics.classes_without_positives == [3]


def test_random_data_with_empty_classes_against_sklearn():
    """Classes with no positive (or no negative) are NaN and left out; the rest equal sklearn."""
    rng = np.random.default_rng(11)
    targets = (rng.random((50, 6)) < 0.4).astype(float)
    targets[:, 0] = 0  # no positive
    targets[:, 5] = 1  # no negative: AP defined, AUC not
    scores = rng.random((50, 6))
    metrics = compute_metrics(scores, targets)
    assert math.isnan(metrics.per_class_ap[0]) and math.isnan(metrics.per_class_auc[0])
    assert math.isnan(metrics.per_class_auc[5])
    assert metrics.per_class_ap[5] == pytest.approx(1.0)
    kept = [1, 2, 3, 4]
    assert metrics.mAP == pytest.approx(np.mean(
        [average_precision_score(targets[:, c], scores[:, c]) for c in [*kept, 5]]))
    assert metrics.mAUC == pytest.approx(
        roc_auc_score(targets[:, kept], scores[:, kept], average="macro"))
    assert metrics.accuracy == pytest.approx(np.mean(scores.argmax(1) == targets.argmax(1)))
