"""The shared threshold rule and the contract's metrics dict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectnas.training import best_threshold, defect_metrics

CONTRACT_KEYS = {"precision", "recall", "f1", "threshold", "n", "defect_rate", "average_precision", "ece", "brier",
                 "precision_low", "precision_high", "recall_low", "recall_high"}


def test_best_threshold_picks_the_f1_maximum():
    labels = np.array([0, 0, 1, 1, 0, 1])
    probs = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    # thresholds 0.9: F1 .5 | 0.8: .8 | 0.4: .667 | 0.35: 6/7 (P 3/4, R 1) | 0.2: .75 | 0.1: .667
    threshold, f1 = best_threshold(labels, probs)
    assert threshold == pytest.approx(0.35)
    assert f1 == pytest.approx(6 / 7)
    # the rule applied with that threshold gives that F1 (>= is inclusive)
    assert defect_metrics(labels, probs, threshold)["f1"] == pytest.approx(f1)


def test_best_threshold_separable_data_gives_f1_one():
    labels = np.array([1, 0, 1, 0, 0])
    probs = np.array([0.7, 0.2, 0.9, 0.3, 0.69])
    threshold, f1 = best_threshold(labels, probs)
    assert f1 == pytest.approx(1.0) and 0.69 < threshold <= 0.7


def test_best_threshold_without_defects():
    assert best_threshold(np.zeros(4), np.array([0.1, 0.9, 0.5, 0.3])) == (0.5, 0.0)


def test_defect_metrics_by_hand():
    labels = np.array([1, 1, 0, 0, 1])
    probs = np.array([0.9, 0.2, 0.8, 0.1, 0.5])  # 0.5 == threshold counts as defect
    m = defect_metrics(labels, probs, 0.5)
    assert set(m) == CONTRACT_KEYS
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["threshold"] == 0.5 and m["n"] == 5 and m["defect_rate"] == pytest.approx(0.6)
    assert isinstance(m["n"], int) and all(isinstance(m[k], float) for k in CONTRACT_KEYS - {"n"})
    json.dumps(m)  # plain JSON types


@pytest.mark.parametrize("seed", range(5))
def test_defect_metrics_values_are_in_unit_interval(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 50)
    m = defect_metrics(labels, rng.random(50), float(rng.random()))
    for key in ("precision", "recall", "f1", "threshold", "defect_rate"):
        assert 0.0 <= m[key] <= 1.0


def test_defect_metrics_no_predicted_defects_is_zero_not_nan():
    m = defect_metrics(np.array([1, 0, 0]), np.array([0.1, 0.2, 0.3]), 0.9)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0


def test_expected_calibration_error_by_hand():
    from defectnas.training.metrics import expected_calibration_error, reliability_bins

    labels = np.array([1, 0, 1, 0, 1])
    probs = np.array([0.05, 0.15, 0.95, 0.85, 1.0])  # 1.0 falls in the last (closed) bin with 0.95
    # bins: [0, .1) |.05−1| · 1, [.1, .2) |.15−0| · 1, [.8, .9) |.85−0| · 1, [.9, 1] |1.95−2| over 2 pairs
    assert expected_calibration_error(labels, probs) == pytest.approx((0.95 + 0.15 + 0.85 + 0.05) / 5)
    bins = reliability_bins(labels, probs)
    assert len(bins) == 10 and [b["n"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 1, 2]
    assert bins[9]["mean_probability"] == pytest.approx(0.975) and bins[9]["defect_rate"] == 1.0
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


def test_wilson_interval_by_hand():
    from defectnas.training.metrics import wilson_interval

    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(0.8389, abs=1e-4)


def test_defect_metrics_calibration_keys_on_one_class():
    m = defect_metrics(np.zeros(4, dtype=int), np.array([0.1, 0.2, 0.3, 0.9]), 0.5)
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.09 + 0.81) / 4) and m["average_precision"] == 0.0
    assert m["recall_low"] == 0.0 and m["recall_high"] == 1.0  # no defects: recall unknown
