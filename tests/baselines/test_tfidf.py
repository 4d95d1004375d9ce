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


def test_tfidf_refuses_bare_strings_and_reads_texts_as_every_model_does(synthetic_split):
    import pytest

    from defectnas.errors import DataError

    train, valid, test = synthetic_split["train"], synthetic_split["valid"], synthetic_split["test"]
    floor = TfidfLogReg(seed=0).fit(train, valid)
    with pytest.raises(DataError, match="predict_proba: queries is a single string"):
        floor.predict_proba("drill", "bits!")  # five one-letter pairs before
    with pytest.raises(DataError, match="titles missing"):
        floor.predict_proba(list(test["query"]))
    q, t = test["query"].head(5).tolist(), test["title"].head(5).tolist()
    assert np.allclose(floor.predict_proba([x.upper() + "  " for x in q], t), floor.predict_proba(q, t))  # normalised text
    assert np.allclose(floor.predict_proba(test.head(5)), floor.predict_proba(q, t))
