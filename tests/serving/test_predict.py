"""Batch scoring: predict_proba encodes each distinct query and title once, and reads titles from a product cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from defectnas import DefectClassifier
from defectnas.cli import main
from defectnas.data import text_pairs
from defectnas.data.tokenizer import trim_padding
from defectnas.serving.cache import ProductCache, build_cache
from defectnas.serving.catalog import read_catalog
from defectnas.training import predict_logits

from .conftest import CACHED_ATOL, catalog_frame


def _forward_logits(model, query: np.ndarray, title: np.ndarray, batch: int = 16) -> np.ndarray:
    """The model's forward over every pair, both towers run per pair (what scoring was)."""
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(trim_padding(query[i : i + batch])), torch.from_numpy(trim_padding(title[i : i + batch])))
                               .numpy() for i in range(0, len(query), batch)])


def _pair_by_pair(clf, df: pd.DataFrame) -> np.ndarray:
    """predict_proba as it was: both towers run for every pair."""
    queries, titles = text_pairs(df)
    enc = clf._encode(pd.DataFrame({"query": queries, "title": titles}), labels=False)
    return clf.calibrator_.transform_logits(_forward_logits(clf.model_, enc.query, enc.title))


def _counting(clf) -> dict[str, int]:
    """Count the rows each tower encodes."""
    counts = {"query": 0, "title": 0}
    model = clf.model_
    for side, encode in (("query", model.encode_query), ("title", model.encode_title)):
        def counted(ids, side=side, encode=encode):
            counts[side] += len(ids)
            return encode(ids)
        setattr(model, f"encode_{side}", counted)
    return counts


def _table(seed: int = 0) -> pd.DataFrame:
    """6 queries × 25 products in random order, one query also written with other case and spacing."""
    catalog = catalog_frame(25)
    queries = ["drill bit", "garden hose", "usb cable", "desk lamp", "paint brush", "rug"]
    df = pd.DataFrame({"query": np.repeat(queries, 25), "product_id": np.tile(catalog["product_id"], 6), "title": np.tile(catalog["title"], 6)})
    df.loc[df.index[:5], "query"] = "Drill   BIT"  # the same query once normalised
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("fixture", ["model_dir", "matching_model_dir"])
def test_each_distinct_query_and_title_is_encoded_once_and_scores_are_unchanged(fixture, request):
    clf = DefectClassifier.load(request.getfixturevalue(fixture))
    df = _table()
    expected = _pair_by_pair(clf, df)
    counts = _counting(clf)
    probs = clf.predict_proba(df, batch_size=16)  # several batches of each side
    assert counts == {"query": 6, "title": 25}  # not 150 of each
    np.testing.assert_allclose(probs, expected, atol=1e-6, rtol=0)
    assert clf.predict_proba(df.iloc[:0]).shape == (0,)


@pytest.mark.parametrize("fixture", ["model_dir", "matching_model_dir"])
def test_the_trainers_validation_scoring_encodes_each_distinct_query_once_too(fixture, request):
    clf = DefectClassifier.load(request.getfixturevalue(fixture))
    df = _table(seed=1)
    queries, titles = text_pairs(df)
    enc = clf._encode(pd.DataFrame({"query": queries, "title": titles}), labels=False)
    expected = _forward_logits(clf.model_, enc.query, enc.title)
    clf.model_.train()
    counts = _counting(clf)
    logits = predict_logits(clf.model_, enc.query, enc.title, batch_size=16)
    assert counts == {"query": 6, "title": 25} and clf.model_.training  # its mode restored for the next epoch
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_titles_come_from_the_cache_by_product_id_unless_the_title_differs(matching_model_dir, tmp_path):
    clf = DefectClassifier.load(matching_model_dir)
    df = _table()
    build_cache(matching_model_dir, read_catalog(catalog_frame(25))[0], tmp_path / "c", dtype="float32")
    cache = ProductCache(tmp_path / "c")
    df.loc[df["product_id"] == "p3", "title"] = "Another Title"  # not what the cache holds: encoded, as without a cache
    df.loc[df["product_id"] == "p4", "product_id"] = "unknown"  # not cached: encoded
    expected = _pair_by_pair(clf, df)
    counts = _counting(clf)
    probs = clf.predict_proba(df, cache=cache)
    assert counts == {"query": 6, "title": 2}
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)


def test_predict_command_with_a_cache(matching_model_dir, other_model_dir, tmp_path, capsys):
    df = _table()
    df["label"] = 0
    df.to_csv(tmp_path / "pairs.csv", index=False)
    assert main(["cache", "--model", str(matching_model_dir), "--catalog", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "c"),
                 "--quiet"]) == 0
    args = ["predict", "--model", str(matching_model_dir), "--data", str(tmp_path / "pairs.csv"), "--format", "table",
            "--query-col", "query", "--title-col", "title", "--label-col", "label", "--defect-labels", "1"]
    assert main(args + ["--out", str(tmp_path / "plain.csv"), "--quiet"]) == 0
    assert main(args + ["--out", str(tmp_path / "cached.csv"), "--cache", str(tmp_path / "c")]) == 0
    assert "150 of 150 pairs took their title encoding from" in capsys.readouterr().err
    plain, cached = pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "cached.csv")
    assert cached.columns.tolist() == plain.columns.tolist() and len(cached) == 150
    np.testing.assert_allclose(cached["defect_probability"], plain["defect_probability"], atol=CACHED_ATOL, rtol=0)  # a float16 cache

    other = ["predict", "--model", str(other_model_dir)] + args[3:]
    assert main(other + ["--out", str(tmp_path / "x.csv"), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "built by another model" in err and "\n" not in err and not (tmp_path / "x.csv").exists()


def test_predict_says_when_no_id_column_lets_the_cache_help_and_takes_threads(matching_model_dir, tmp_path, capsys):
    df = _table()
    df.to_csv(tmp_path / "pairs.csv", index=False)
    assert main(["cache", "--model", str(matching_model_dir), "--catalog", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "c"),
                 "--quiet"]) == 0
    df.drop(columns=["product_id"]).rename(columns={"query": "kw", "title": "name"}).to_csv(tmp_path / "noid.csv", index=False)
    assert main(["predict", "--model", str(matching_model_dir), "--data", str(tmp_path / "noid.csv"), "--query-col", "kw",
                 "--title-col", "name", "--out", str(tmp_path / "o.csv"), "--cache", str(tmp_path / "c"), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "has no product id column" in err and "0 of 150 pairs took their title encoding" in err
    assert len(pd.read_csv(tmp_path / "o.csv")) == 150
    # a catalogue cached without ids names its products by their titles, as predict does: every pair is a hit
    df[["title"]].to_csv(tmp_path / "catalog_noid.csv", index=False)
    assert main(["cache", "--model", str(matching_model_dir), "--catalog", str(tmp_path / "catalog_noid.csv"), "--out", str(tmp_path / "c2"),
                 "--quiet"]) == 0
    assert main(["predict", "--model", str(matching_model_dir), "--data", str(tmp_path / "noid.csv"), "--query-col", "kw",
                 "--title-col", "name", "--out", str(tmp_path / "o2.csv"), "--cache", str(tmp_path / "c2")]) == 0
    err = capsys.readouterr().err
    assert "id made from its title" in err and "150 of 150 pairs took their title encoding" in err
    df.rename(columns={"query": "kw", "title": "name", "product_id": "sku"}).to_csv(tmp_path / "sku.csv", index=False)
    args = ["predict", "--model", str(matching_model_dir), "--data", str(tmp_path / "sku.csv"), "--query-col", "kw", "--title-col", "name",
            "--out", str(tmp_path / "s.csv"), "--cache", str(tmp_path / "c")]
    assert main(args + ["--id-col", "sku"]) == 0
    err = capsys.readouterr().err
    assert "150 of 150 pairs took their title encoding" in err and "no product id column" not in err
    assert main(args + ["--id-col", "skew"]) == 2
    err = capsys.readouterr().err.strip()
    assert "sku.csv" in err and "no column 'skew' for --id-col" in err and "\n" not in err
