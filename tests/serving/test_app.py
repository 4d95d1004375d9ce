"""The FastAPI app through its test client: scores, bounds, errors, API key, schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from defectnas import DefectClassifier
from defectnas.serving.app import ServeSettings, create_app
from defectnas.serving.cache import build_cache, model_hash
from defectnas.serving.catalog import read_catalog

from .conftest import CACHED_ATOL, catalog_frame


@pytest.fixture(scope="module", params=["model_dir", "matching_model_dir"])
def served(request, tmp_path_factory):
    model_dir = request.getfixturevalue(request.param)
    catalog = read_catalog(catalog_frame())[0]
    cache_dir = tmp_path_factory.mktemp("cache")
    build_cache(model_dir, catalog, cache_dir)
    app = create_app(model_dir, cache_dir, ServeSettings(max_products=50, max_query_chars=40, max_title_chars=60))
    client = TestClient(app)
    client.model_name = f"{model_dir.name}@{model_hash(model_dir).split(':')[1][:12]}"
    return client, DefectClassifier.load(model_dir), catalog.set_index("product_id")["title"]


def test_scores_by_ids_and_by_titles_equal_predict_proba(served):
    client, clf, titles = served
    ids = ["p1", "p2", "p30", "p1"]
    expected = clf.predict_proba(["Garden Hose"] * len(ids), titles[ids].tolist())
    r = client.post("/score", json={"query": "Garden Hose", "product_ids": ids})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == client.model_name
    assert [x["product_id"] for x in body["results"]] == ids
    np.testing.assert_allclose([x["defect_probability"] for x in body["results"]], expected, atol=CACHED_ATOL, rtol=0)
    assert [x["is_defect"] for x in body["results"]] == [bool(p >= clf.threshold_) for p in expected]

    raw = ["Cordless DRILL with bits", "rug"]
    r = client.post("/score", json={"query": "Garden Hose", "titles": raw})
    assert r.status_code == 200
    assert [x["title"] for x in r.json()["results"]] == raw
    np.testing.assert_allclose([x["defect_probability"] for x in r.json()["results"]], clf.predict_proba(["garden hose"] * 2, raw), atol=1e-5, rtol=0)


def test_integer_ids_are_accepted_as_text(served):
    client = served[0]
    assert client.post("/score", json={"query": "hose", "product_ids": [12345]}).json() == {"detail": 'unknown product id(s): "12345"'}


def test_unknown_ids_are_404_naming_them(served):
    r = served[0].post("/score", json={"query": "hose", "product_ids": ["p1", "nope", "gone", "nope"]})
    assert r.status_code == 404
    assert r.json() == {"detail": 'unknown product id(s): "nope", "gone"'}


@pytest.mark.parametrize("body, status, reason", [
    ({"query": "q", "product_ids": [f"p{i}" for i in range(51)]}, 413, "too many products: 51 > 50"),
    ({"query": "q", "titles": ["t"] * 51}, 413, "too many products"),
    ({"query": "q"}, 422, "exactly one of product_ids"),
    ({"query": "q", "product_ids": ["p1"], "titles": ["t"]}, 422, "exactly one of product_ids"),
    ({"query": "q", "product_ids": []}, 422, "product_ids is empty"),
    ({"query": "   ", "product_ids": ["p1"]}, 422, "query is empty"),
    ({"query": "q" * 41, "product_ids": ["p1"]}, 422, "query too long: 41 > 40"),
    ({"query": "q", "titles": ["ok", "t" * 61]}, 422, "titles[1] too long: 61 > 60"),
    ({"query": "q", "titles": ["ok", ""]}, 422, "titles[1] is empty"),
    ({"query": 3, "titles": ["ok"]}, 422, "invalid request: query"),
    ({"query": "q", "titles": "ok"}, 422, "invalid request: titles"),
    ({"query": "q", "titles": ["ok"], "path": "/etc/passwd"}, 422, "invalid request: path"),
    ({"titles": ["ok"]}, 422, "invalid request: query: Field required"),
])
def test_bad_requests_get_a_one_line_reason(served, body, status, reason):
    r = served[0].post("/score", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and reason in detail


def test_invalid_json_and_oversized_bodies(served):
    client = served[0]
    r = client.post("/score", content=b'{"query": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = client.post("/score", content=b"x" * 10_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "body too large" in r.json()["detail"]

    def chunks():
        for _ in range(200):
            yield b"x" * 65536

    r = client.post("/score", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


ASTRAL = "\U0001F600"  # beyond the BMP: 4 bytes in UTF-8, 12 escaped as a surrogate pair (\ud83d\ude00)


def _escaped(body: dict, indent: int | None = None) -> bytes:
    """A body as Python's json.dumps and requests' json= send it: non-ASCII \\u-escaped."""
    return json.dumps(body, ensure_ascii=True, indent=indent).encode()


@pytest.mark.parametrize("bounds", [{}, {"max_products": 50, "max_query_chars": 40, "max_title_chars": 60},
                                    {"max_products": 3, "max_query_chars": 500, "max_title_chars": 20, "max_id_chars": 90}])
def test_the_body_cap_holds_the_worst_case_json_of_every_request_within_the_bounds(bounds):
    """Every text at its bound, every character beyond the BMP and escaped, every field the schema
    allows, pretty-printed: the derived cap still takes it (a 4-bytes-a-character cap did not)."""
    s = ServeSettings(**bounds)
    n, query, title, pid = s.max_products, ASTRAL * s.max_query_chars, ASTRAL * s.max_title_chars, ASTRAL * s.max_id_chars
    rerank = {"query": query, "top_n": n, "return_documents": True, "locale": pid, "model": pid, "max_tokens_per_doc": 512,
              "max_chunks_per_doc": 1}
    bodies = [{"query": query, "titles": [title] * n, "product_ids": None, "locale": None},
              {"query": query, "product_ids": [pid] * n, "locale": pid, "titles": None},
              {**rerank, "documents": [{"text": title}] * n}, {**rerank, "documents": [{"id": pid}] * n}]
    for body in bodies:
        for indent in (None, 8):
            assert len(_escaped(body, indent)) <= s.body_limit(), (list(body), indent)
    assert ServeSettings(**bounds, max_body_bytes=1234).body_limit() == 1234


def test_requests_at_the_bounds_with_escaped_text_are_served_and_one_byte_over_the_cap_is_413(model_dir):
    """A user's trial: 50 Japanese titles of 500 characters, sent by requests' json=, got 413."""
    s = ServeSettings(max_products=20, max_query_chars=40, max_title_chars=300)
    client = TestClient(create_app(model_dir, None, s))
    headers = {"content-type": "application/json"}
    query, title = "drill " + "電" + ASTRAL * 33, "drill " + ("電" + ASTRAL) * 147  # at the bounds: 40 and 300 characters
    assert (len(query), len(title)) == (40, 300)
    body = {"query": query, "titles": [title] * 20}
    plain = client.post("/score", json=body)
    assert plain.status_code == 200, plain.text
    for indent in (None, 8):
        r = client.post("/score", content=_escaped(body, indent), headers=headers)
        assert r.status_code == 200 and r.json() == plain.json(), r.text
    ids = {"query": query, "product_ids": [("電" + ASTRAL) * 100] * 20}  # 200 characters, the id bound: unknown, not too large
    r = client.post("/score", content=_escaped(ids), headers=headers)
    assert r.status_code == 404 and "unknown product id(s)" in r.json()["detail"]
    rerank = {"query": query, "documents": [{"text": title}] * 20, "model": ("電" + ASTRAL) * 100, "top_n": 3, "return_documents": True}
    r = client.post("/v1/rerank", content=_escaped(rerank, 8), headers=headers)
    assert r.status_code == 200 and len(r.json()["results"]) == 3, r.text

    exact = _escaped(body)
    exact += b" " * (s.body_limit() - len(exact))  # whitespace after the JSON: exactly the cap
    assert client.post("/score", content=exact, headers=headers).status_code == 200
    r = client.post("/score", content=exact + b" ", headers=headers)
    assert r.status_code == 413 and r.json() == {"detail": f"request body too large: over {s.body_limit()} bytes"}


def test_locale_is_held_to_the_id_bound(served):
    r = served[0].post("/score", json={"query": "hose", "product_ids": ["p1"], "locale": "x" * 201})
    assert r.status_code == 422 and r.json()["detail"] == "locale too long: 201 > 200 characters"


@pytest.mark.parametrize("route", ["/score", "/v1/rerank"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_without_a_json_content_type_is_told_to_send_the_header(served, route, content_type):
    body = {"query": "drill", "product_ids": ["p0"]} if route == "/score" else {"query": "drill", "documents": ["a drill"]}
    headers = {"content-type": content_type} if content_type else {}
    r = served[0].post(route, content=json.dumps(body).encode(), headers=headers)
    detail = r.json()["detail"]
    assert r.status_code == 422 and "Content-Type: application/json" in detail and "\n" not in detail
    assert (content_type or "no Content-Type") in detail


def test_healthz_and_openapi(served):
    client, clf, titles = served
    h = client.get("/healthz")
    assert h.status_code == 200
    assert h.json()["status"] == "ok" and h.json()["products"] == len(titles)
    assert h.json()["matching"] == clf.model_config_.matching
    schema = client.get("/openapi.json").json()
    assert {"/score", "/healthz", "/v1/rerank"} <= set(schema["paths"])
    assert {"query", "product_ids"} <= set(schema["components"]["schemas"]["ScoreByIds"]["properties"])
    assert {"query", "titles"} <= set(schema["components"]["schemas"]["ScoreByTitles"]["properties"])


def test_api_key(model_dir, tmp_path):
    client = TestClient(create_app(model_dir, None, ServeSettings(api_key="s3cret")))
    body = {"query": "hose", "titles": ["garden hose"]}
    assert client.post("/score", json=body).status_code == 401
    r = client.post("/score", json=body, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert client.post("/score", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_without_a_cache_ids_are_unknown_and_titles_work(model_dir):
    client = TestClient(create_app(model_dir))
    assert client.get("/healthz").json()["products"] == 0
    r = client.post("/score", json={"query": "hose", "product_ids": ["p1"]})
    assert r.status_code == 404 and r.json()["detail"] == ('unknown product id(s): "p1"; this server has no product cache (started '
                                                           'without --cache): send titles, or serve with --cache DIR')
    r = client.post("/v1/rerank", json={"query": "hose", "documents": [{"id": "p1"}, "garden hose"]})
    assert r.status_code == 404 and "this server has no product cache" in r.json()["detail"]
    assert client.post("/score", json={"query": "hose", "titles": ["garden hose"]}).status_code == 200


def test_worker_factory_reads_its_spec_from_the_environment(model_dir, monkeypatch):
    from defectnas.serving.app import SERVE_ENV, app_from_env

    monkeypatch.setenv(SERVE_ENV, json.dumps({"model": str(model_dir), "cache": None, "settings": {"max_products": 2, "threads": 1}}))
    client = TestClient(app_from_env())
    assert client.post("/score", json={"query": "q", "titles": ["a", "b", "c"]}).status_code == 413


def test_a_model_in_a_numbered_folder_is_named_with_its_parent(model_dir, tmp_path):
    """A search's front models live in pareto/0, pareto/1…: responses named them "0@<hash>"."""
    import shutil

    from defectnas.serving.cache import served_name
    from defectnas.serving.scorer import Scorer

    assert served_name(tmp_path / "pareto" / "0") == "pareto/0" and served_name(tmp_path / "best") == "best"
    assert served_name(tmp_path / "model-2") == "model-2"
    front = tmp_path / "pareto" / "3"
    shutil.copytree(model_dir, front)
    assert Scorer.load(front).name == f"pareto/3@{model_hash(front).split(':')[1][:12]}"
