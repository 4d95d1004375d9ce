"""Issue 14 in serving: products keyed by (locale, id) as ESCI keys them, and text judged on what
the model sees — in the cache and in /score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from defectnas import DefectClassifier
from defectnas.errors import DataError, DataWarning
from defectnas.serving.app import create_app
from defectnas.serving.cache import AmbiguousProducts, ProductCache, build_cache
from defectnas.serving.catalog import read_catalog

# ESCI's products file: B1 is one product in us and another in es
PRODUCTS = pd.DataFrame({"product_id": ["B1", "B1", "B2"], "product_locale": ["us", "es", "us"],
                         "product_title": ["Drill Bit Set", "Garden Hose Deck", "USB Cable"]})


@pytest.fixture
def esci_cache(model_dir, tmp_path):
    path = tmp_path / "shopping_queries_dataset_products.parquet"
    PRODUCTS.to_parquet(path)
    build_cache(model_dir, path, tmp_path / "cache")
    return tmp_path / "cache"


def test_cache_keys_esci_products_by_locale_and_scores_what_predict_scores(model_dir, esci_cache):
    cache = ProductCache(esci_cache)
    assert cache.manifest["key"] == ["product_id", "product_locale"] and len(cache) == 3
    client = TestClient(create_app(model_dir, esci_cache))
    clf = DefectClassifier.load(model_dir)
    for locale, title in (("es", "Garden Hose Deck"), ("us", "Drill Bit Set")):
        r = client.post("/score", json={"query": "garden hose", "product_ids": ["B1"], "locale": locale})
        assert r.status_code == 200, r.text
        expected = clf.predict_proba(["garden hose"], [title])  # what predict gives the row of that locale
        np.testing.assert_allclose(r.json()["results"][0]["defect_probability"], expected[0], atol=1e-5, rtol=0)
    r = client.post("/score", json={"query": "garden hose", "product_ids": ["B2", "B1"]})
    assert r.status_code == 422 and r.json()["detail"] == (
        'product id(s) held by several locales of the cache: "B1" (es, us); give "locale" to say which product is meant')
    r = client.post("/score", json={"query": "usb cable", "product_ids": ["B2"]})  # one locale holds it: no ambiguity
    assert r.status_code == 200
    r = client.post("/score", json={"query": "usb cable", "product_ids": ["B2"], "locale": "es"})
    assert r.status_code == 404 and r.json()["detail"] == 'unknown product id(s) in locale "es": "B2"'
    with pytest.raises(AmbiguousProducts):
        cache.take(["B1"])


def test_a_cache_without_locales_refuses_a_locale(model_dir, tmp_path):
    build_cache(model_dir, pd.DataFrame({"product_id": ["p1"], "title": ["drill bit"]}), tmp_path / "c")
    r = TestClient(create_app(model_dir, tmp_path / "c")).post("/score", json={"query": "drill", "product_ids": ["p1"], "locale": "us"})
    assert r.status_code == 422 and "locale applies only" in r.json()["detail"]


def test_a_key_with_two_titles_is_refused_or_left_out_never_resolved_silently(tmp_path):
    table = pd.DataFrame({"product_id": ["B1", "B1", "B2", "B2"], "product_locale": ["us", "us", "us", "us"],
                          "title": ["Drill", "Hose", "Cable", "Cable"]})
    with pytest.raises(DataError, match=r"1 product key with different titles \(B1 us\): ambiguous"):  # "1 key", not "1 key(s)"
        read_catalog(table, invalid_rows="error")
    with pytest.warns(DataWarning, match="ambiguous, so not cached"):
        cat, notes = read_catalog(table)
    assert cat["product_id"].tolist() == ["B2"] and notes["duplicate_ids"] == 1


def test_empty_titles_follow_the_invalid_rows_policy(tmp_path):
    table = pd.DataFrame({"product_id": ["a", "b", "c"], "title": ["drill", None, "\u200b"]})
    with pytest.raises(DataError, match=r"<DataFrame>: row 2: empty title in column 'title' \(and 1 more row\)"):
        read_catalog(table, invalid_rows="error")
    with pytest.warns(DataWarning, match="2 rows without a title left out: row 2, row 3"):
        assert read_catalog(table)[0]["product_id"].tolist() == ["a"]


def test_cache_leaves_out_titles_the_model_cannot_see(model_dir, tmp_path):
    table = pd.DataFrame({"product_id": ["a", "b"], "title": ["drill bit", "パンダ"]})  # the model's vocabulary: English words
    with pytest.warns(DataWarning, match="^1 product whose title the model sees as nothing or only unknown word pieces"):
        report = build_cache(model_dir, table, tmp_path / "c")
    assert report.count == 1 and ProductCache(tmp_path / "c").ids == ["a"]
    with pytest.raises(DataError, match="only unknown word pieces"):
        build_cache(model_dir, table, tmp_path / "d", invalid_rows="error")


@pytest.mark.parametrize("body, detail", [
    ({"query": "\u200b\u200b", "titles": ["drill"]}, "query: no word pieces once normalised and tokenised"),
    ({"query": "\u00ad\u2060", "product_ids": ["p1"]}, "query: no word pieces once normalised and tokenised"),
    ({"query": "パンダ", "titles": ["drill"]}, "query: only unknown word pieces once normalised and tokenised"),
    ({"query": "drill", "titles": ["garden hose", "\ufeff\u200b"]}, "titles[1]: no word pieces once normalised and tokenised"),
])
def test_score_judges_emptiness_on_what_the_model_sees(model_dir, body, detail):
    from defectnas.serving.scorer import Scorer

    client = TestClient(create_app(model_dir, scorer=Scorer.load(model_dir)))
    r = client.post("/score", json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith(detail), r.text


@pytest.mark.parametrize("damage", ["no config.json", "config.json not JSON", "no model.safetensors"])
def test_the_encoder_digests_of_a_damaged_model_directory_are_one_line(tmp_path, damage):
    from defectnas.serving.cache import CacheError, encoder_hash, title_tower_hash

    d = tmp_path / "model"
    d.mkdir()
    if damage != "no config.json":
        (d / "config.json").write_text("{bad" if damage == "config.json not JSON" else '{"model": {}}')
    for digest in (encoder_hash, title_tower_hash):
        with pytest.raises(CacheError, match=f"^{d}") as e:
            digest(d)
        assert "\n" not in str(e.value)
