"""``POST /v1/rerank``: the rerank clients' shape, its scores against /score, ordering, top_n, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from defectnas.serving.app import ServeSettings, create_app
from defectnas.serving.cache import build_cache
from defectnas.serving.catalog import read_catalog

from .conftest import catalog_frame


@pytest.fixture(scope="module")
def client(model_dir, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("cache")
    build_cache(model_dir, read_catalog(catalog_frame())[0], cache_dir)
    return TestClient(create_app(model_dir, cache_dir, ServeSettings(max_products=20, max_query_chars=40, max_title_chars=60)))


def _defect(client, body) -> list[float]:
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    return [x["defect_probability"] for x in r.json()["results"]]


def test_titles_and_ids_ordered_by_one_minus_defect_probability(client):
    titles = ["cordless drill with bits", "garden hose", "desk lamp", "rug"]
    ids = ["p1", "p7", "p30"]
    expected = 1 - np.array(_defect(client, {"query": "garden hose", "titles": titles})
                            + _defect(client, {"query": "garden hose", "product_ids": ids}))
    docs = titles[:2] + [{"id": ids[0]}, {"text": titles[2]}, {"id": ids[1]}, titles[3], {"id": ids[2]}]
    positions = [0, 1, 4, 2, 5, 3, 6]  # where each expected score sits in docs
    r = client.post("/v1/rerank", json={"model": "rerank-english-v3.0", "query": "garden hose", "documents": docs})
    assert r.status_code == 200, r.text
    for hint in ({"max_tokens_per_doc": 4096}, {"max_chunks_per_doc": 10}):  # Cohere v2's and v1's truncation hints: ignored
        same = client.post("/v1/rerank", json={"model": "rerank-v3.5", "query": "garden hose", "documents": docs, **hint})
        assert same.status_code == 200 and same.json() == r.json(), same.text
    body = r.json()
    assert body["model"] == client.get("/healthz").json()["model"] and set(body) == {"model", "results"}
    results = body["results"]
    assert sorted(x["index"] for x in results) == list(range(len(docs)))
    by_index = {x["index"]: x["relevance_score"] for x in results}
    np.testing.assert_allclose([by_index[p] for p in positions], expected, atol=1e-6, rtol=0)
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert all(set(x) == {"index", "relevance_score"} for x in results)  # no documents unless asked


def test_top_n_ties_and_return_documents(client):
    docs = ["garden hose", {"id": "p3"}, "garden hose", "desk lamp"]
    r = client.post("/v1/rerank", json={"query": "hose", "documents": docs, "top_n": 2, "return_documents": True})
    assert r.status_code == 200, r.text
    full = client.post("/v1/rerank", json={"query": "hose", "documents": docs}).json()["results"]
    assert r.json()["results"] == [{**x, "document": {"id": "p3"} if x["index"] == 1 else {"text": docs[x["index"]]}} for x in full[:2]]
    same = [x["index"] for x in full if x["index"] in (0, 2)]
    assert same == [0, 2]  # equal scores keep request order
    assert len(client.post("/v1/rerank", json={"query": "hose", "documents": docs, "top_n": 99}).json()["results"]) == 4


@pytest.mark.parametrize("body, status, reason", [
    ({"query": "hose", "documents": []}, 422, "documents is empty"),
    ({"query": "hose", "documents": ["t"] * 21}, 413, "too many documents: 21 > 20"),
    ({"query": " ", "documents": ["t"]}, 422, "query is empty"),
    ({"query": "hose", "documents": ["ok", ""]}, 422, "documents[1] is empty"),
    ({"query": "hose", "documents": ["ok", "t" * 61]}, 422, "documents[1] too long: 61 > 60"),
    ({"query": "hose", "documents": ["ok"], "top_n": 0}, 422, "top_n must be at least 1, got 0"),
    ({"query": "hose", "documents": ["ok"], "top_n": "1"}, 422, "invalid request: top_n"),
    ({"query": "hose", "documents": [{"id": "p1", "text": "x"}]}, 422, 'documents[0] must be a title string, {"id": "..."}'),
    ({"query": "hose", "documents": [{"id": "p1", "text": "x"}]}, 422, 'got both "id" and "text" (one key, not both)'),
    ({"query": "hose", "documents": ["ok", {"title": "x"}]}, 422, 'documents[1] must be a title string, {"id": "..."} (a cached product) '
                                                                  'or {"text": "..."} (a title); got an object with "title"'),
    ({"query": "hose", "documents": ["ok", {}]}, 422, "documents[1] must be a title string"),
    ({"query": "hose", "documents": ["ok", {}]}, 422, "; got an empty object"),  # not "one key, not both"
    ({"query": "hose", "documents": ["ok", 7]}, 422, "; got a number"),
    ({"query": "hose", "documents": [None]}, 422, "; got null"),
    ({"query": "hose", "documents": [{"id": None}]}, 422, '; got "id": null'),
    ({"query": "hose", "documents": [{"id": 1.5}]}, 422, '; got "id": a number with a fraction'),
    ({"query": "hose", "documents": [{"text": ["x"]}]}, 422, '; got "text": an array'),
    ({"query": "hose", "documents": ["ok"], "locale": "x" * 201}, 422, "locale too long: 201 > 200 characters"),
    ({"query": "hose", "documents": ["ok"], "model": "m" * 201}, 422, "model too long: 201 > 200 characters"),
    ({"query": "hose", "documents": [{"id": "nope"}, "ok"]}, 404, 'unknown product id(s): "nope"'),
    ({"query": "hose", "documents": ["ok"], "locale": "us"}, 422, "locale applies only"),
    ({"query": "hose", "documents": ["ok"], "rank_fields": ["x"]}, 422, "invalid request: rank_fields"),
    ({"query": "hose", "documents": ["ok"], "max_tokens_per_doc": "512"}, 422, "invalid request: max_tokens_per_doc"),
    ({"query": "hose", "texts": ["ok"]}, 422, "invalid request: documents"),  # TEI's shape: another route's
])
def test_bad_requests_get_a_one_line_reason(client, body, status, reason):
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and reason in detail
    both = any(isinstance(d, dict) and {"id", "text"} <= set(d) for d in body.get("documents", []))
    assert ("not both" in detail) == both  # said only when a document had both keys (an empty one has none)


def test_the_key_is_checked_and_a_bearer_token_is_accepted(model_dir):
    client = TestClient(create_app(model_dir, None, ServeSettings(api_key="s3cret")))
    body = {"query": "hose", "documents": ["garden hose"]}
    assert client.post("/v1/rerank", json=body).status_code == 401
    assert client.post("/v1/rerank", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/v1/rerank", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/score", json={"query": "hose", "titles": ["garden hose"]}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/v1/rerank", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
