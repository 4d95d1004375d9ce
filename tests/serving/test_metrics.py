"""``GET /metrics``: parsed with Prometheus' own parser; counts by route and status, latency, cache and LRU state."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from defectnas.serving.app import ServeSettings, create_app
from defectnas.serving.cache import ProductCache, build_cache
from defectnas.serving.catalog import read_catalog

from .conftest import catalog_frame


def scrape(client) -> dict:
    """{(sample name, frozenset(labels)): value} of one scrape."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def served(model_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    build_cache(model_dir, read_catalog(catalog_frame())[0], cache_dir)
    return TestClient(create_app(model_dir, cache_dir, ServeSettings(max_products=5, query_cache=8))), ProductCache(cache_dir)


def test_requests_by_route_and_status_and_latency(served):
    client, _ = served
    for body in [{"query": "hose", "product_ids": ["p1", "p2"]}, {"query": "hose", "product_ids": ["p1"]}, {"query": "drill", "titles": ["drill"]}]:
        assert client.post("/score", json=body).status_code == 200
    assert client.post("/score", json={"query": "hose", "product_ids": ["nope"]}).status_code == 404
    assert client.post("/score", json={"query": "hose", "titles": ["t"] * 6}).status_code == 413
    assert client.post("/score", content=b"{", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/v1/rerank", json={"query": "hose", "documents": ["garden hose", {"id": "p3"}]}).status_code == 200
    assert client.get("/no/such/path").status_code == 404
    m = scrape(client)
    assert value(m, "defectnas_requests_total", route="/score", method="POST", status="200") == 3
    assert value(m, "defectnas_requests_total", route="/score", method="POST", status="404") == 1
    assert value(m, "defectnas_requests_total", route="/score", method="POST", status="413") == 1
    assert value(m, "defectnas_requests_total", route="/score", method="POST", status="422") == 1
    assert value(m, "defectnas_requests_total", route="/v1/rerank", method="POST", status="200") == 1
    assert value(m, "defectnas_requests_total", route="other", method="GET", status="404") == 1
    assert value(m, "defectnas_request_duration_seconds_count", route="/score", status="200") == 3
    assert value(m, "defectnas_request_duration_seconds_count", route="/score", status="413") == 1
    assert value(m, "defectnas_request_duration_seconds_bucket", route="/score", status="200", le="+Inf") == 3
    assert 0 < value(m, "defectnas_request_duration_seconds_sum", route="/score", status="200") < 60
    buckets = [value(m, "defectnas_request_duration_seconds_bucket", route="/score", status="200", le=le) for le in ("0.001", "0.01", "0.1", "1.0", "10.0")]
    assert buckets == sorted(buckets)  # cumulative
    assert value(scrape(client), "defectnas_requests_total", route="/metrics", method="GET", status="200") == 1  # the first scrape


def test_cache_generation_size_and_query_cache(served):
    client, cache = served
    m = scrape(client)
    assert value(m, "defectnas_cache_generation") == cache.manifest["generation"] >= 1
    assert value(m, "defectnas_cache_products") == len(cache) == 60
    assert value(m, "defectnas_query_cache_capacity") == 8
    assert value(m, "defectnas_query_cache_hit_ratio") == 0.0
    for q in ["hose", "hose", "drill", "hose"]:
        client.post("/score", json={"query": q, "product_ids": ["p1"]})
    m = scrape(client)
    assert value(m, "defectnas_query_cache_hits_total") == 2 and value(m, "defectnas_query_cache_misses_total") == 2
    assert value(m, "defectnas_query_cache_hit_ratio") == 0.5 and value(m, "defectnas_query_cache_size") == 2
    assert value(m, "defectnas_max_concurrency") == 16 and value(m, "defectnas_requests_in_progress") == 0
    info = [k for k in m if k[0] == "defectnas_info"]
    assert len(info) == 1 and dict(info[0][1])["backend"] == "torch"


def test_without_a_cache_and_apps_keep_their_own_counts(model_dir):
    a, b = TestClient(create_app(model_dir)), TestClient(create_app(model_dir))
    a.post("/score", json={"query": "hose", "titles": ["garden hose"]})
    assert value(scrape(a), "defectnas_cache_generation") == -1
    assert value(scrape(a), "defectnas_requests_total", route="/score", method="POST", status="200") == 1
    assert value(scrape(b), "defectnas_requests_total", route="/score", method="POST", status="200") == 0
