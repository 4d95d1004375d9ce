"""The Python API's arguments: pairs given as lists (not bare strings), model directories that are
files, devices torch cannot use, and scikit-learn's get_params / set_params / clone."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from defectnas import DefectClassifier
from defectnas.errors import ConfigError, DataError, NotFittedError


@pytest.mark.parametrize("method", ["predict_proba", "predict", "text_problems"])
def test_a_bare_string_for_queries_or_titles_is_refused(fitted, method):
    call = getattr(fitted, method)
    with pytest.raises(DataError, match=f"{method}: queries is a single string \\('drill'\\), not a list; pass lists"):
        call("drill", "bits!")  # five characters each: was scored as five one-letter pairs
    with pytest.raises(DataError, match="titles is a single string"):
        call(["drill"], "cordless drill")
    with pytest.raises(DataError, match=f"{method}: titles missing"):
        call(["drill"])
    with pytest.raises(DataError, match="2 queries but 1 title: pass one title per query"):
        call(["drill", "lamp"], ["acme drill"])


def test_lists_series_arrays_and_tables_are_still_taken(fitted):
    queries, titles = ["white drill", "black lamp"], ["acme drill", "bolt lamp"]
    expected = fitted.predict_proba(queries, titles)
    assert expected.shape == (2,)
    np.testing.assert_array_equal(fitted.predict_proba(pd.Series(queries), np.array(titles)), expected)
    np.testing.assert_array_equal(fitted.predict_proba(pd.DataFrame({"query": queries, "title": titles})), expected)
    assert fitted.text_problems(queries, titles) == ["", ""]


def test_a_file_given_as_a_model_directory_is_one_line(tmp_path, synthetic_split, tiny_options):
    table = tmp_path / "pairs.csv"
    table.write_text("query,title,label\n", encoding="utf-8")
    with pytest.raises(DataError, match="pairs.csv: not a model directory \\(a file"):
        DefectClassifier.load(table)  # was NotADirectoryError: 'pairs.csv/config.json'
    with pytest.raises(DataError, match="pairs.csv: not a model directory \\(a file"):
        DefectClassifier(**tiny_options, teacher=str(table)).fit(tmp_path / "never-read.csv")  # before the data is read
    with pytest.raises(DataError, match="nope: not a model directory \\(no config.json\\)"):
        DefectClassifier(**tiny_options, teacher=str(tmp_path / "nope")).configs()


def test_read_json_says_missing_for_a_file_in_place_of_its_folder(tmp_path):
    from defectnas.storage import check_model_directory, read_json

    (tmp_path / "f").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="^no manifest$"):
        read_json(tmp_path / "f" / "manifest.json", DataError, "no manifest")
    with pytest.raises(DataError, match="not a model directory \\(a file"):
        check_model_directory(tmp_path / "f")


@pytest.mark.parametrize("device, fragment", [("gpu", "is not a torch device"), ("cuda", "is_available() is False"),
                                              ("cuda:x", "is not a torch device")])
def test_a_device_torch_cannot_use_is_refused_where_the_config_is_built(monkeypatch, tiny_options, fitted, tmp_path, device, fragment):
    from defectnas.config import TrainConfig, check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        TrainConfig(device=device)
    with pytest.raises(ConfigError, match=re.escape(fragment)):  # fit: before any data is read
        DefectClassifier(**tiny_options, device=device).fit(tmp_path / "never-read.csv")
    fitted.save(tmp_path / "m")
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        DefectClassifier.load(tmp_path / "m", device=device)


def test_get_params_set_params_and_sklearn_clone(fitted, tiny_options, tmp_path):
    from sklearn.base import clone

    clf = DefectClassifier(**tiny_options)
    assert clf.get_params() == tiny_options and clf.get_params(deep=False) == tiny_options
    copy = clone(clf)
    assert type(copy) is DefectClassifier and copy.get_params() == tiny_options and copy is not clf
    assert clf.set_params(epochs=1, variant="dl-jl") is clf and clf.get_params()["epochs"] == 1
    with pytest.raises(ConfigError, match="unknown option\\(s\\) epoch;"):
        clf.set_params(epoch=3)
    with pytest.raises(ConfigError, match="epochs must be a whole number"):
        clf.set_params(epochs="3")
    assert clf.get_params()["epochs"] == 1  # a refused change leaves the options as they were

    for model in (fitted, DefectClassifier.load(fitted.save(tmp_path / "m"))):  # fitted: an unfitted copy with the same options
        fresh = clone(model)
        assert fresh.get_params() == model.get_params() and not hasattr(fresh, "model_")
        with pytest.raises(NotFittedError):
            fresh.predict_proba(["white drill"], ["acme drill"])
