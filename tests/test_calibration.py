"""Calibration: fitted on validation, saved as JSON (no pickle), monotone, applied everywhere alike."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from defectnas import DefectClassifier
from defectnas.calibration import CALIBRATION_FILE, Calibrator, fit_calibrator, sigmoid
from defectnas.errors import DataError
from defectnas.training import best_threshold


def _scores(seed: int = 0, n: int = 600):
    """Overconfident logits of a noisy task (what a defect-weighted loss produces), labels, query groups."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(int)
    logits = 3.0 * (labels + rng.normal(0, 0.8, n)) - 0.5
    return labels, logits, rng.integers(0, 60, n)


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibrated_scores_never_reorder_pairs(method):
    labels, logits, groups = _scores()
    cal = fit_calibrator(labels, logits, groups, method=method)
    assert cal.method == method
    z = np.sort(np.random.default_rng(1).normal(0, 4, 2000))
    p = cal.transform_logits(z)
    assert np.all(np.diff(p) >= 0) and np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p[::50]) > 0)  # strictly increasing: no ties (isotonic's steps are tie-broken)
    if method == "sigmoid":
        assert cal.a > 0


def test_isotonic_keeps_the_raw_ranking_and_average_precision():
    from defectnas.training.metrics import average_precision

    labels, logits, groups = _scores(3)
    cal = fit_calibrator(labels, logits, groups, method="isotonic")
    calibrated = cal.transform_logits(logits)
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(logits, kind="stable"))
    assert average_precision(labels, calibrated) == pytest.approx(average_precision(labels, sigmoid(logits)), abs=1e-12)


def test_isotonic_is_applied_as_scikit_learn_predicts():
    labels, logits, _ = _scores()
    cal = fit_calibrator(labels, logits, method="isotonic")
    pos, neg = int(labels.sum()), int(len(labels) - labels.sum())  # bounded by Platt's smoothed targets
    iso = IsotonicRegression(y_min=1 / (neg + 2), y_max=(pos + 1) / (pos + 2), out_of_bounds="clip").fit(sigmoid(logits), labels)
    z = np.random.default_rng(2).normal(0, 5, 500)
    np.testing.assert_allclose(cal.transform_logits(z), iso.predict(sigmoid(z)), atol=1e-6, rtol=0)  # up to the tie break
    p = cal.transform_logits(np.array([-50.0, 50.0]))
    assert 0.0 < p[0] and p[1] < 1.0  # never certain: not 0, not 1


def test_auto_takes_the_sigmoid_when_validation_has_few_defects():
    from defectnas.calibration import MIN_ISOTONIC_DEFECTS

    labels, logits, groups = _scores(n=600)
    keep = np.flatnonzero(labels == 0).tolist() + np.flatnonzero(labels == 1)[: MIN_ISOTONIC_DEFECTS - 1].tolist()
    cal = fit_calibrator(labels[keep], logits[keep], groups[keep], method="auto")
    assert cal.method == "sigmoid" and "fewer than" in cal.report["selection"] and "cv_brier" not in cal.report
    enough = np.flatnonzero(labels == 0).tolist() + np.flatnonzero(labels == 1)[:MIN_ISOTONIC_DEFECTS].tolist()
    assert "cv_brier" in fit_calibrator(labels[enough], logits[enough], groups[enough], method="auto").report


def test_auto_picks_the_lower_cross_validated_brier_and_improves_it():
    labels, logits, groups = _scores()
    cal = fit_calibrator(labels, logits, groups, method="auto", seed=0)
    cv = cal.report["cv_brier"]
    assert cal.method == min(cv, key=cv.get) and cal.report["folds"] == 5
    assert cal.report["brier_after"] < cal.report["brier_before"]


def test_one_class_or_none_gives_the_identity():
    z = np.array([-1.0, 0.0, 2.0])
    assert fit_calibrator(np.zeros(3), z).method == "identity"
    cal = fit_calibrator(np.array([0, 1, 0]), z, method="none")
    np.testing.assert_array_equal(cal.transform_logits(z), sigmoid(z))
    with pytest.raises(DataError):
        fit_calibrator(np.array([0, 1, 0]), z, method="beta")


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_save_load_round_trip_is_plain_json(tmp_path, monkeypatch, method):
    labels, logits, _ = _scores()
    cal = fit_calibrator(labels, logits, method=method)
    path = cal.save(tmp_path)
    saved = json.loads(path.read_text())  # plain JSON
    assert saved["method"] == method and ({"x", "y"} if method == "isotonic" else {"a", "b"}) <= set(saved)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    back = Calibrator.load(tmp_path)
    z = np.linspace(-8, 8, 101)
    np.testing.assert_array_equal(back.transform_logits(z), cal.transform_logits(z))
    np.testing.assert_allclose(back.transform(sigmoid(z)), cal.transform_logits(z), atol=1e-9)


def test_a_bad_calibration_file_is_a_one_line_error(tmp_path):
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"method": "sigmoid", "a": -1.0, "b": 0.0}))
    with pytest.raises(DataError, match="slope"):
        Calibrator.load(tmp_path)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"method": "platt"}))
    with pytest.raises(DataError, match="unknown calibration"):
        Calibrator.load(tmp_path)


def test_fit_calibrates_and_picks_the_threshold_on_calibrated_validation(fitted, synthetic_split):
    valid = synthetic_split["valid"]
    assert fitted.calibrator_.method in ("isotonic", "sigmoid")
    assert fitted.calibrator_.report["fitted_on"] == "validation split"
    assert (fitted.threshold_, fitted.valid_f1_) == best_threshold(valid["label"].to_numpy(), fitted.predict_proba(valid))


def test_saved_model_has_calibration_json_and_the_threshold_rule(fitted, tmp_path, synthetic_split):
    fitted.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["threshold_rule"] == "f1-best on validation (calibrated probabilities)"
    assert config["calibration"]["method"] == fitted.calibrator_.method
    assert json.loads((tmp_path / CALIBRATION_FILE).read_text())["method"] == fitted.calibrator_.method
    test = synthetic_split["test"]
    np.testing.assert_array_equal(DefectClassifier.load(tmp_path).predict_proba(test), fitted.predict_proba(test))


def test_a_model_saved_before_calibration_loads_and_scores_raw(fitted, tmp_path, synthetic_split):
    fitted.save(tmp_path)
    (tmp_path / CALIBRATION_FILE).unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("threshold_rule", "calibration"):  # as an older defectnas wrote it
        config.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(config))
    old = DefectClassifier.load(tmp_path)
    assert old.calibrator_.method == "identity" and old.threshold_rule_ == "f1-best on validation"
    test = synthetic_split["test"]
    from defectnas.training import predict_logits

    enc = old._encode(test, labels=False)
    raw = 1.0 / (1.0 + np.exp(-predict_logits(old.model_, enc.query, enc.title).astype(np.float64)))
    np.testing.assert_array_equal(old.predict_proba(test), raw)
    assert np.array_equal(old.predict(test), (raw >= old.threshold_).astype(np.int64))


def test_served_scores_equal_calibrated_predict_proba(fitted):
    from defectnas.serving.encoding import encode_query, encode_titles, score

    assert fitted.calibrator_.method != "identity"
    titles = ["acme drill", "bolt paint", "crest lamp", "forge ladder"]
    served = score(fitted, encode_query(fitted, "cordless drill"), encode_titles(fitted, titles))
    np.testing.assert_allclose(served, fitted.predict_proba(["cordless drill"] * 4, titles), atol=1e-6, rtol=0)


def test_the_calibration_option_is_checked():
    from defectnas.config import TrainConfig
    from defectnas.errors import ConfigError

    assert TrainConfig().calibration == "auto"
    with pytest.raises(ConfigError, match="calibration"):
        TrainConfig(calibration="beta")


def test_calibration_none_keeps_raw_scores(synthetic_split, tiny_options):
    clf = DefectClassifier(**{**tiny_options, "epochs": 1, "calibration": "none"}).fit(synthetic_split["train"].head(200), synthetic_split["valid"])
    assert clf.calibrator_.method == "identity"
    z = np.array([-2.0, 0.5])
    np.testing.assert_array_equal(clf.calibrator_.transform_logits(z), sigmoid(z))
