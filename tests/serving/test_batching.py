"""Micro-batching (serve --batch-wait-ms): concurrent cached requests share one query-tower pass, same scores."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi.testclient import TestClient

from defectnas.cli import main
from defectnas.serving.app import ServeSettings, create_app
from defectnas.serving.batching import MicroBatcher
from defectnas.serving.cache import build_cache
from defectnas.serving.catalog import read_catalog
from defectnas.serving.scorer import Scorer, UnknownProducts

from .conftest import catalog_frame

REQUESTS = [("garden hose", ["p1", "p2", "p3"]), ("Cordless  DRILL", ["p4"]), ("garden hose", ["p5", "p1"]),
            ("desk lamp", ["p6", "p7", "p8", "p9"]), ("cordless drill", ["p10", "p4"])]


@pytest.fixture(scope="module")
def cached(matching_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("batching") / "cache"
    build_cache(matching_model_dir, read_catalog(catalog_frame(30))[0], out)
    return matching_model_dir, out


def test_requests_that_arrive_together_share_one_query_pass_and_score_as_alone(cached):
    model_dir, cache = cached
    alone = Scorer.load(model_dir, cache)
    expected = [alone.score_ids(q, ids) for q, ids in REQUESTS]
    scorer = Scorer.load(model_dir, cache, query_cache=16)
    passes = []
    encode = scorer.clf.model_.encode_query
    scorer.clf.model_.encode_query = lambda ids: passes.append(len(ids)) or encode(ids)
    batcher = MicroBatcher(scorer, wait=0.05)

    async def together():
        return await asyncio.gather(*(batcher.score_ids(q, ids) for q, ids in REQUESTS))

    got = asyncio.run(together())
    assert passes == [3] and (batcher.batches, batcher.requests) == (1, 5)  # 3 distinct queries, one pass
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=0)
    assert scorer.query_cache.stats()["misses"] == 3 and scorer.query_cache.stats()["hits"] == 2

    got = asyncio.run(together())  # every query now in the LRU: no pass at all
    assert passes == [3] and batcher.batches == 2
    with pytest.raises(UnknownProducts):  # at once, not after the wait
        asyncio.run(batcher.score_ids("hose", ["p1", "nope"]))
    assert not batcher.pending


def test_serve_with_batching_answers_as_without_and_counts_batches(cached):
    model_dir, cache = cached
    body = {"query": "garden hose", "product_ids": ["p1", "p2"]}
    with TestClient(create_app(model_dir, cache, ServeSettings(batch_wait_ms=1))) as batched, TestClient(create_app(model_dir, cache)) as plain:
        a, b = batched.post("/score", json=body), plain.post("/score", json=body)
        assert a.status_code == b.status_code == 200
        np.testing.assert_allclose([r["defect_probability"] for r in a.json()["results"]],
                                   [r["defect_probability"] for r in b.json()["results"]], atol=1e-6, rtol=0)
        r = batched.post("/v1/rerank", json={"query": "hose", "documents": [{"id": "p1"}, "garden hose"]})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        assert batched.post("/score", json={"query": "hose", "product_ids": ["nope"]}).status_code == 404
        metrics = batched.get("/metrics").text
    assert "defectnas_query_batches_total 2.0" in metrics and "defectnas_batched_requests_total 2.0" in metrics


def test_bad_batching_values_are_one_line_and_exit_2(model_dir, capsys):
    assert main(["serve", "--model", str(model_dir), "--batch-wait-ms", "-1", "--quiet"]) == 2
    assert "--batch-wait-ms" in capsys.readouterr().err
    assert main(["serve", "--model", str(model_dir), "--max-batch", "0", "--quiet"]) == 2
    assert "--max-batch" in capsys.readouterr().err
