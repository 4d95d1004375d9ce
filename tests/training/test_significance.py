"""Model a against model b on the same rows: fast AP and the paired bootstrap over queries."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from defectnas.training.significance import average_precision_fast, paired_bootstrap


def test_fast_average_precision_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for n in (5, 60, 800):
        for ties in (False, True):
            y = rng.integers(0, 2, n)
            y[0] = 1
            s = rng.integers(0, 6, n) / 6 if ties else rng.random(n)
            assert average_precision_fast(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert average_precision_fast(np.zeros(4), np.arange(4)) == 0.0


def test_paired_bootstrap_finds_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(60), 20)
    labels = rng.random(len(groups)) < 0.2
    good = rng.random((2, len(groups))) + 0.8 * labels  # 2 seeds each
    weak = rng.random((2, len(groups))) + 0.2 * labels
    better = paired_bootstrap(labels, groups, good, weak, resamples=300, seed=0)
    assert better["diff"] > 0 and better["ci_low"] > 0 and better["p_value"] < 0.01 and better["queries"] == 60
    same = paired_bootstrap(labels, groups, good, good + 1e-9 * rng.random(good.shape), resamples=300, seed=0)
    assert same["ci_low"] <= 0 <= same["ci_high"]
