"""Live cache updates: serve swaps to a new cache generation without a restart, never mixing two."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pandas as pd

from defectnas import DefectClassifier
from defectnas.serving.cache import ProductCache, build_cache
from defectnas.serving.catalog import read_catalog
from defectnas.serving.reload import CacheWatcher
from defectnas.serving.scorer import Scorer

from .conftest import catalog_frame
from .live import serving

IDS = [f"p{i}" for i in range(12)]


def _updated(frame: pd.DataFrame) -> pd.DataFrame:
    """The catalogue's next version: half the requested products get new titles, one product is added."""
    new = frame.copy()
    for i in range(0, 12, 2):
        new.loc[new["product_id"] == f"p{i}", "title"] = f"Garden Hose Reel {i}"
    return pd.concat([new, pd.DataFrame({"product_id": ["new1"], "title": ["Paint Brush Set"]})], ignore_index=True)


def test_watcher_swaps_to_a_new_generation_and_keeps_the_old_one_when_the_new_is_not_servable(matching_model_dir, other_model_dir,
                                                                                                tmp_path):
    out = tmp_path / "cache"
    frame = catalog_frame(30)
    build_cache(matching_model_dir, read_catalog(frame)[0], out)
    scorer = Scorer.load(matching_model_dir, out)
    watcher = CacheWatcher(scorer, interval=0.05)
    assert not watcher.check() and scorer.cache.generation == 1  # nothing new

    build_cache(matching_model_dir, read_catalog(_updated(frame))[0], out)
    assert watcher.check() and scorer.cache.generation == 2 and watcher.reloads == 1
    clf = DefectClassifier.load(matching_model_dir)
    expected = Scorer(clf, ProductCache(out)).score_ids("hose", ["p0", "new1"])
    np.testing.assert_array_equal(scorer.score_ids("hose", ["p0", "new1"]), expected)

    build_cache(other_model_dir, read_catalog(frame)[0], out, rebuild=True)  # another model's cache in the served directory
    assert not watcher.check() and scorer.cache.generation == 2 and watcher.failures == 1  # refused: the old one is served
    np.testing.assert_array_equal(scorer.score_ids("hose", ["p0", "new1"]), expected)  # its files are gone, its maps are not
    assert not watcher.check() and watcher.failures == 1  # refused once, not again and again
    assert "another model" in watcher.refused  # what /healthz shows as cache_update_refused


def test_a_damaged_or_removed_manifest_is_reported_until_restored_and_the_served_generation_stays(matching_model_dir, tmp_path):
    out = tmp_path / "cache"
    build_cache(matching_model_dir, read_catalog(catalog_frame(30))[0], out)
    scorer = Scorer.load(matching_model_dir, out)
    watcher = CacheWatcher(scorer, interval=0.05)
    before = scorer.score_ids("hose", ["p0", "p1"])
    good = (out / "manifest.json").read_bytes()
    for damage, said in ((good[: len(good) // 2], "unreadable"), (None, "missing")):
        if damage is None:
            (out / "manifest.json").unlink()
        else:
            (out / "manifest.json").write_bytes(damage)
        assert not watcher.check() and said in watcher.refused and scorer.cache.generation == 1
        np.testing.assert_array_equal(scorer.score_ids("hose", ["p0", "p1"]), before)  # still served from generation 1
        (out / "manifest.json").write_bytes(good)  # restored by hand: the served generation is the newest again
        assert not watcher.check() and watcher.refused is None and scorer.cache.generation == 1
    assert watcher.failures == 2 and watcher.reloads == 0


def test_healthz_names_the_served_generation_and_a_refused_update(matching_model_dir, other_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from defectnas.serving.app import ServeSettings, create_app

    out = tmp_path / "cache"
    frame = catalog_frame(30)
    build_cache(matching_model_dir, read_catalog(frame)[0], out)
    app = create_app(matching_model_dir, out, ServeSettings(cache_reload_s=0.05))
    with TestClient(app) as client:
        health = client.get("/healthz").json()
        assert health["cache_generation"] == 1 and health["cache_update_refused"] is None
        build_cache(other_model_dir, read_catalog(frame)[0], out, rebuild=True)
        deadline = time.time() + 10
        while time.time() < deadline and client.get("/healthz").json()["cache_update_refused"] is None:
            time.sleep(0.05)
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["cache_generation"] == 1 and "another model" in health["cache_update_refused"]


def test_serve_swaps_generations_under_concurrent_load_without_a_failed_or_mixed_response(matching_model_dir, tmp_path):
    out = tmp_path / "cache"
    frame = catalog_frame(30)
    build_cache(matching_model_dir, read_catalog(frame)[0], out)
    clf = DefectClassifier.load(matching_model_dir)
    queries = ["garden hose", "cordless drill", "desk lamp"]

    with serving(matching_model_dir, out, cache_reload_s=0.02, max_concurrency=0) as (url, _, _):
        before = {q: Scorer(clf, ProductCache(out)).score_ids(q, IDS) for q in queries}  # (the server's torch threads)
        responses: list[tuple[str, int, list[float] | str]] = []
        stop = threading.Event()

        def client(k: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                i = k
                while not stop.is_set():
                    q = queries[i % len(queries)]
                    r = http.post("/score", json={"query": q, "product_ids": IDS})
                    body = [x["defect_probability"] for x in r.json()["results"]] if r.status_code == 200 else r.text
                    responses.append((q, r.status_code, body))
                    i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 60
            while len(responses) < 20:  # the old generation under load
                assert time.monotonic() < deadline, "no responses"
                stop.wait(0.01)
            build_cache(matching_model_dir, read_catalog(_updated(frame))[0], out)  # defectnas cache, into the served directory
            with httpx.Client(base_url=url) as http:
                while "defectnas_cache_generation 2.0" not in http.get("/metrics").text:
                    assert time.monotonic() < deadline, "the new generation was not picked up"
                    stop.wait(0.02)
            swapped = len(responses)
            while len(responses) < swapped + 40:  # the new generation under load
                assert time.monotonic() < deadline, "no responses after the swap"
                stop.wait(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        after = {q: Scorer(clf, ProductCache(out)).score_ids(q, IDS) for q in queries}

    generations = []
    for q, status, body in responses:
        assert status == 200, body
        if np.allclose(body, before[q], rtol=0, atol=1e-12):
            generations.append(1)
        else:
            np.testing.assert_allclose(body, after[q], rtol=0, atol=1e-12)  # wholly the new generation, never a mix
            generations.append(2)
    assert generations.count(1) >= 20 and generations.count(2) >= 36
    assert set(generations[swapped + 4 :]) == {2}  # once /metrics shows the swap, only the 4 requests then in flight may be old
