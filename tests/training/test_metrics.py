"""The shared threshold rule and the contract's metrics dict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectnas.training import best_threshold, defect_metrics

CONTRACT_KEYS = {"precision", "recall", "f1", "threshold", "n", "defect_rate"}


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
