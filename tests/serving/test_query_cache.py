"""The query-encoding LRU: eviction order, counts, off at capacity 0, and the scorer using it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from defectnas.serving.app import ServeSettings, create_app
from defectnas.serving.query_cache import QueryCache
from defectnas.serving.scorer import Scorer


def test_least_recently_used_goes_first_and_counts_are_kept():
    calls = []
    cache = QueryCache(2)
    encode = lambda q: calls.append(q) or q.upper()  # noqa: E731
    assert [cache.get_or_compute(q, encode) for q in ["a", "b", "a", "c", "b", "a"]] == ["A", "B", "A", "C", "B", "A"]
    # a, b cached; a hit (a most recent); c evicts b; b evicts a; a evicts c
    assert calls == ["a", "b", "c", "b", "a"]
    assert cache.stats() == {"capacity": 2, "size": 2, "hits": 1, "misses": 5, "hit_rate": pytest.approx(1 / 6)}
    cache.reset()
    assert cache.stats() == {"capacity": 2, "size": 0, "hits": 0, "misses": 0, "hit_rate": 0.0}


def test_many_keys_are_computed_in_one_batch_even_when_the_new_ones_evict_cached_ones():
    batches = []
    encode_many = lambda qs: batches.append(list(qs)) or [q.upper() for q in qs]  # noqa: E731
    cache = QueryCache(2)
    cache.get_or_compute("z", str.upper)
    # "z" is cached when the batch is planned, but the three new keys evict it before its turn comes
    assert cache.get_or_compute_many(["a", "b", "a", "c", "z"], encode_many) == ["A", "B", "A", "C", "Z"]
    assert batches == [["a", "b", "c"], ["z"]]
    assert cache.get_or_compute_many(["c", "z", "z"], encode_many) == ["C", "Z", "Z"] and len(batches) == 2  # all hits: no pass
    assert QueryCache(0).get_or_compute_many(["a", "a"], encode_many) == ["A", "A"] and batches[-1] == ["a"]  # off: one pass, no keeping


def test_capacity_zero_is_off():
    cache = QueryCache(0)
    assert [cache.get_or_compute("q", len) for _ in range(3)] == [1, 1, 1]
    assert len(cache) == 0 and cache.stats()["misses"] == 3 and cache.stats()["hits"] == 0
    with pytest.raises(ValueError):
        QueryCache(-1)


def test_threads_share_it_safely():
    cache = QueryCache(16)
    errors = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for q in rng.integers(0, 40, 500):
            if cache.get_or_compute(str(q), lambda k: int(k) * 2) != int(q) * 2:
                errors.append(q)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 16 and cache.hits + cache.misses == 2000


def test_scorer_reuses_query_encodings_with_identical_scores(model_dir):
    from defectnas import DefectClassifier

    clf = DefectClassifier.load(model_dir)
    titles = ["cordless drill with bits", "garden hose", "desk lamp"]
    with_lru, without = Scorer(clf, query_cache=4), Scorer(clf)
    first = with_lru.score_titles("Garden  Hose", titles)
    second = with_lru.score_titles("garden hose", titles)  # the same text once normalised: a hit
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(second, without.score_titles("garden hose", titles))
    assert with_lru.query_cache.stats()["hits"] == 1 and with_lru.query_cache.stats()["misses"] == 1
    assert without.query_cache.stats()["size"] == 0


def test_serve_setting_sizes_it_and_healthz_reports_it(model_dir):
    client = TestClient(create_app(model_dir, settings=ServeSettings(query_cache=2)))
    assert client.get("/healthz").json()["query_cache"] == {"capacity": 2, "size": 0, "hits": 0, "misses": 0, "hit_rate": 0.0}
    for q in ["hose", "drill", "hose", "lamp", "drill"]:
        assert client.post("/score", json={"query": q, "titles": ["garden hose"]}).status_code == 200
    stats = client.get("/healthz").json()["query_cache"]
    assert (stats["hits"], stats["misses"], stats["size"]) == (1, 4, 2)
    off = TestClient(create_app(model_dir, settings=ServeSettings(query_cache=0)))
    off.post("/score", json={"query": "hose", "titles": ["garden hose"]})
    off.post("/score", json={"query": "hose", "titles": ["garden hose"]})
    assert off.get("/healthz").json()["query_cache"]["hits"] == 0
