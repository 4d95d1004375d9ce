"""The LightGBM baseline: learns the synthetic task, saves without pickle, loads identically."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectnas.baselines import GBDTClassifier, load_model
from defectnas.baselines.text_features import FEATURES
from defectnas.errors import NotFittedError


@pytest.fixture(scope="module")
def gbdt(synthetic_split):
    return GBDTClassifier(num_rounds=30, num_leaves=7, min_data_in_leaf=5, num_threads=1).fit(synthetic_split["train"], synthetic_split["valid"])


def test_fit_predict_learns(gbdt, synthetic_split):
    test = synthetic_split["test"]
    p = gbdt.predict_proba(test)
    assert p.shape == (len(test),) and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(gbdt.predict_proba(test["query"].tolist(), test["title"].tolist()), p)
    metrics = gbdt.evaluate(test)
    assert metrics["f1"] > 0.6 and metrics["n"] == len(test) and metrics["threshold"] == gbdt.threshold_
    assert gbdt.num_parameters() > 0
    assert set(gbdt.feature_importance()) == set(FEATURES)


def test_save_load_roundtrip(gbdt, synthetic_split, tmp_path):
    gbdt.save(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert files == {"config.json", "booster.txt", "features.json", "features.safetensors", "calibration.json"}
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "gbdt" and config["threshold"] == gbdt.threshold_
    assert config["calibration"]["method"] == gbdt.calibrator_.method != "identity"
    for again in (GBDTClassifier.load(tmp_path / "m"), load_model(tmp_path / "m")):
        np.testing.assert_array_equal(again.predict_proba(synthetic_split["test"]), gbdt.predict_proba(synthetic_split["test"]))
        assert again.threshold_ == gbdt.threshold_


def test_importance_plot(gbdt, tmp_path):
    gbdt.plot_importance(tmp_path / "imp.png")
    assert (tmp_path / "imp.png").read_bytes()[:4] == b"\x89PNG"


def test_not_fitted():
    with pytest.raises(NotFittedError):
        GBDTClassifier().predict_proba(["a"], ["b"])


def test_calibrated_like_the_two_tower_model(gbdt, synthetic_split, tmp_path):
    from defectnas.training import best_threshold

    valid = synthetic_split["valid"]
    assert (gbdt.threshold_, gbdt.valid_f1_) == best_threshold(valid["label"].to_numpy(), gbdt.predict_proba(valid))
    raw = gbdt.booster_.predict(gbdt.features_.transform(*_texts(synthetic_split["test"])), num_iteration=gbdt.best_iteration_)
    np.testing.assert_array_equal(gbdt.predict_proba(synthetic_split["test"]), gbdt.calibrator_.transform(raw))
    gbdt.save(tmp_path / "old")
    (tmp_path / "old" / "calibration.json").unlink()  # saved before calibration: raw scores
    np.testing.assert_array_equal(GBDTClassifier.load(tmp_path / "old").predict_proba(synthetic_split["test"]), raw)


def _texts(df):
    return df["query"].tolist(), df["title"].tolist()
