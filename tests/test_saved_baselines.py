"""Baselines saved by ``compare --save-models`` work wherever a saved model is taken.

``evaluate`` and ``predict`` read every kind through ``defectnas.baselines.load_model`` (its
calibration and validation-chosen threshold included); what only two-tower models can do
(``distill-query``, ``predict --cache``, ``DefectClassifier.load``) is refused in one line that
names the kind — never a KeyError traceback. The TF-IDF floor saves without pickle too.
"""

from __future__ import annotations

import inspect
import json
import re

import numpy as np
import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.baselines import GBDTClassifier, TfidfLogReg, load_model
from defectnas.cli import main
from defectnas.errors import DataError


@pytest.fixture(scope="module")
def saved(synthetic_split, tmp_path_factory):
    """``saved(kind)``: (fitted model, its saved directory) for the two quick baselines, each fitted once."""
    root, done = tmp_path_factory.mktemp("baselines"), {}
    train, valid = synthetic_split["train"], synthetic_split["valid"]
    build = {"gbdt": lambda: GBDTClassifier(num_rounds=20, num_leaves=7, min_data_in_leaf=5, num_threads=1).fit(train, valid),
             "tfidf": lambda: TfidfLogReg(seed=0).fit(train, valid)}

    def get(kind: str):
        if kind not in done:
            model = build[kind]()
            done[kind] = (model, model.save(root / kind))
        return done[kind]
    return get


@pytest.fixture(scope="module")
def test_csv(synthetic_split, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "test.csv"
    synthetic_split["test"][["query", "title", "label"]].to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["gbdt", "tfidf"])
def test_evaluate_and_predict_take_a_saved_baseline(kind, saved, test_csv, synthetic_split, tmp_path, capsys):
    model, directory = saved(kind)
    test = synthetic_split["test"]
    assert main(["evaluate", "--model", str(directory), "--data", str(test_csv), "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    expected = model.evaluate(test)
    for key in ("f1", "average_precision", "threshold", "n", "ece"):  # at the saved threshold, on calibrated probabilities
        assert metrics[key] == pytest.approx(expected[key], abs=1e-12)

    assert main(["predict", "--model", str(directory), "--data", str(test_csv), "--out", str(tmp_path / "p.csv"), "--quiet"]) == 0
    scored = pd.read_csv(tmp_path / "p.csv")
    probs = model.predict_proba(test["query"].tolist(), test["title"].tolist())
    np.testing.assert_allclose(scored["defect_probability"], probs, atol=1e-12)
    assert (scored["is_defect"] == (probs >= model.threshold_)).all()


def test_two_tower_only_paths_refuse_a_baseline_in_one_line(saved, test_csv, tmp_path, capsys):
    directory = saved("gbdt")[1]
    capsys.readouterr()
    assert main(["distill-query", "--model", str(directory), "--data", str(test_csv), "--out", str(tmp_path / "dq"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'gbdt' model" in err and "distill-query" in err
    assert main(["predict", "--model", str(directory), "--data", str(test_csv), "--out", str(tmp_path / "p.csv"),
                 "--cache", str(tmp_path / "no-cache"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'gbdt' model" in err and "without --cache" in err

    with pytest.raises(DataError, match=r"a 'gbdt' model, not a two-tower one; load it with defectnas\.baselines\.load_model"):
        DefectClassifier.load(directory)
    cross_encoder = tmp_path / "bert"  # a Hugging Face config.json keeps ours under "defectnas"
    cross_encoder.mkdir()
    (cross_encoder / "config.json").write_text(json.dumps({"model_type": "bert", "defectnas": {"model_type": "cross-encoder"}}))
    with pytest.raises(DataError, match="a 'cross-encoder' model"):
        DefectClassifier.load(cross_encoder)


def test_defect_classifier_load_reads_the_kind_without_importing_baselines():
    """Layering: the estimator names a baseline from config.json; the baselines layer loads it."""
    assert not re.search(r"(from|import)\s+\S*baselines", inspect.getsource(DefectClassifier.load))


def test_tfidf_floor_saves_without_pickle_and_loads_bit_for_bit(saved, synthetic_split):
    model, directory = saved("tfidf")
    assert {p.name for p in directory.iterdir()} == {"config.json", "vocabulary.json", "tfidf.safetensors", "calibration.json"}
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "tfidf" and config["threshold"] == model.threshold_
    test = synthetic_split["test"]
    for again in (TfidfLogReg.load(directory), load_model(directory)):
        assert isinstance(again, TfidfLogReg) and again.threshold_ == model.threshold_
        np.testing.assert_array_equal(again.predict_proba(test), model.predict_proba(test["query"], test["title"]))
