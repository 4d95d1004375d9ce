"""dl-gs: a grid of DefectClassifiers, the validation-F1 winner kept, saved as a model directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectnas import DefectClassifier
from defectnas.baselines import GridSearchClassifier, load_model
from defectnas.baselines.grid import grid_points
from defectnas.errors import ConfigError


def test_grid_points():
    points = grid_points({"title_depth": [1, 2], "d_model": [16], "heads": [1, 2]})
    assert len(points) == 4 and points[0] == {"query_depth": 2, "title_depth": 1, "d_model": 16, "heads": 1}
    with pytest.raises(ConfigError, match="unknown grid key"):
        grid_points({"depth": [1]})


def test_fit_picks_best_and_roundtrips(synthetic_split, tiny_options, tmp_path):
    grid = {"query_depth": [1], "title_depth": [1, 2], "d_model": [16], "heads": [2]}
    clf = GridSearchClassifier(grid=grid, **{**tiny_options, "epochs": 1}).fit(synthetic_split["train"], synthetic_split["valid"])
    assert len(clf.trials_) == 2
    assert clf.valid_f1_ == max(t["valid_f1"] for t in clf.trials_)
    assert clf.best_.train_config_.variant == "dl-gs"
    assert len(clf.best_.model_config_.title_layers) == clf.best_point_["title_depth"]
    test = synthetic_split["test"]
    p = clf.predict_proba(test)
    assert clf.evaluate(test)["n"] == len(test)
    clf.save(tmp_path)
    assert len(json.loads((tmp_path / "grid.json").read_text())["trials"]) == 2
    again = load_model(tmp_path)
    assert isinstance(again, GridSearchClassifier) and again.best_point_ == clf.best_point_
    np.testing.assert_allclose(again.predict_proba(test), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(DefectClassifier.load(tmp_path).predict_proba(test), p, rtol=1e-5, atol=1e-6)
