"""The published schema says what the server does: exactly-one-of, bounds, every status; schemathesis with all its checks.

Schemathesis runs as its command line does against ``defectnas serve``, on a real uvicorn on loopback, with
every check; bounded (25 examples per operation, fixed seed, no example database, a wall-clock limit) so
the file runs in seconds. Its settings (``schemathesis.toml``) add two statuses with their reasons: 413
for too many products, and 422 for valid data only when the text is one the model cannot read (a rule
no schema can state), which the extra check of ``schemathesis_hooks.py`` enforces.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from defectnas.serving.app import ServeSettings, create_app
from defectnas.serving.cache import build_cache
from defectnas.serving.catalog import read_catalog

from .conftest import catalog_frame
from .live import serving

pytest.importorskip("schemathesis")
HERE = Path(__file__).parent

BOUNDS = {"max_products": 8, "max_query_chars": 30, "max_title_chars": 40, "max_id_chars": 20}


@pytest.fixture(scope="module")
def app(model_dir, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("cache")
    build_cache(model_dir, read_catalog(catalog_frame())[0], cache_dir)
    return create_app(model_dir, cache_dir, ServeSettings(**BOUNDS, query_cache=16))


def test_score_schema_is_exactly_one_of_ids_or_titles_and_lists_every_status(app, model_dir):
    client = TestClient(app)
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [b["$ref"].rsplit("/", 1)[1] for b in body["oneOf"]] == ["ScoreByIds", "ScoreByTitles"]
    schemas = spec["components"]["schemas"]
    assert schemas["ScoreByIds"]["required"] == ["query", "product_ids"] and schemas["ScoreByIds"]["properties"]["titles"] == {
        "type": "null", "description": "not with product_ids"}
    assert schemas["ScoreByTitles"]["properties"]["titles"]["maxItems"] == 8
    assert schemas["ScoreByTitles"]["properties"]["titles"]["items"]["maxLength"] == 40
    for path in ("/score", "/v1/rerank"):
        responses = spec["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", "404", "413", "422", "503"}  # 401 only with a key
        assert responses["503"]["headers"]["Retry-After"]["required"] is True
    keyed = TestClient(create_app(model_dir, None, ServeSettings(api_key="k"))).get("/openapi.json").json()
    assert "401" in keyed["paths"]["/score"]["post"]["responses"]


def test_malformed_bodies_are_422_as_documented(app):
    client = TestClient(app)
    for content in (b'{"query": ', b"\xff\xfe{}", b"[1]", b""):
        r = client.post("/score", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422, (content, r.text)
        assert "\n" not in r.json()["detail"]
    assert "not valid JSON" in client.post("/score", content=b"\xff{", headers={"content-type": "application/json"}).json()["detail"]


@pytest.mark.parametrize("api_key", [None, "k1"])
def test_schemathesis_with_all_checks_finds_no_mismatch(model_dir, app, api_key, tmp_path):
    """``schemathesis run --checks all`` against a real server: examples, coverage and fuzzing phases, positive and
    negative data, bounded by examples per operation (and a wall-clock limit on the whole run)."""
    cache_dir = app.state.scorer.cache.directory
    with serving(model_dir, cache_dir, **BOUNDS, api_key=api_key) as (url, _, _):
        command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(HERE / "schemathesis.toml"), "run", f"{url}/openapi.json",
                   "--checks", "all", "--max-examples", "25", "--seed", "17", "--workers", "1", "--generation-database", "none",
                   "--request-timeout", "10"] + (["-H", f"X-API-Key: {api_key}"] if api_key else [])
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.serving.schemathesis_hooks", "PYTHONPATH": str(HERE.parents[1])}
        run = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert " passed" in out and "Coverage" in out and "Fuzzing" in out, out[-3000:]
