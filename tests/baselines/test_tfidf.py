"""The TF-IDF floor is calibrated like every other model (same validation split, same rule)."""

from __future__ import annotations

import numpy as np

from defectnas.baselines import TfidfLogReg
from defectnas.calibration import Calibrator


def test_tfidf_floor_is_calibrated_and_keeps_its_ranking(synthetic_split):
    train, valid, test = synthetic_split["train"], synthetic_split["valid"], synthetic_split["test"]
    floor = TfidfLogReg(seed=0).fit(train, valid)
    assert floor.calibrator_.method in ("isotonic", "sigmoid")
    raw = floor.raw_proba(test["query"], test["title"])
    cal = floor.predict_proba(test["query"], test["title"])
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(cal[order]) >= 0)  # monotone: the ranking (and AP) is the raw one
    # class-balanced LR overstates the rate; calibrated probabilities average near the true rate
    assert abs(cal.mean() - test["label"].mean()) < abs(raw.mean() - test["label"].mean())
    assert 0.0 <= floor.threshold_ <= 1.0 and floor.predict(test["query"], test["title"]).sum() > 0
    floor.calibrator_ = Calibrator()  # identity: the raw scores again
    assert np.allclose(floor.predict_proba(test["query"], test["title"]), raw)
