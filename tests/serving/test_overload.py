"""Overload: bounded slots and queue (503 + Retry-After at once beyond them), the per-request deadline,
probes answered under load, graceful shutdown; against a real uvicorn on loopback with a deliberately slow scorer."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from defectnas.cli import main
from defectnas.serving.cache import build_cache
from defectnas.serving.catalog import read_catalog
from defectnas.serving.overload import Admission, Overloaded

from .conftest import catalog_frame
from .live import serving


def post_all(url: str, path: str, bodies: list[dict]) -> list[tuple[int, float, httpx.Response]]:
    """Send all bodies at once (one connection each); (status, seconds, response) per body."""
    def one(body):
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as c:
            start = time.perf_counter()
            r = c.post(path, json=body)
            return r.status_code, time.perf_counter() - start, r

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def test_admission_is_first_come_first_served_and_bounded():
    async def scenario():
        adm = Admission(concurrency=1, queue=2)
        order = []
        await adm.acquire()

        async def waiter(name):
            await adm.acquire()
            order.append(name)

        a, b = asyncio.ensure_future(waiter("a")), asyncio.ensure_future(waiter("b"))
        await asyncio.sleep(0)
        assert adm.waiting == 2
        with pytest.raises(Overloaded):
            await adm.acquire()
        a.cancel()  # a leaves the line: its place is free again
        await asyncio.sleep(0)
        assert adm.waiting == 1 and adm.rejected == 1
        c = asyncio.ensure_future(waiter("c"))
        await asyncio.sleep(0)
        adm.release()
        await asyncio.sleep(0)
        adm.release()
        await asyncio.gather(b, c)
        adm.release()
        assert order == ["b", "c"] and adm.active == 0 and adm.waiting == 0
        free = Admission(0, 0)  # no bound: only counted
        for _ in range(100):
            await free.acquire()
        assert free.active == 100

    asyncio.run(scenario())
    with pytest.raises(ValueError):
        Admission(-1, 0)


def test_beyond_slots_and_queue_503_with_retry_after_at_once(model_dir):
    with serving(model_dir, delay=0.5, max_concurrency=2, max_queue=2, request_timeout_ms=0) as (url, _, _):
        results = post_all(url, "/score", [{"query": "hose", "titles": ["garden hose"]}] * 8)
        with httpx.Client(base_url=url, trust_env=False) as c:
            metrics = c.get("/metrics").text
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(ok) == 4 and len(refused) == 4, [r[0] for r in results]
    assert all(r[2].headers["retry-after"] == "1" and "server overloaded" in r[2].json()["detail"] for r in refused)
    assert max(r[1] for r in refused) < 0.4  # refused without waiting for the 0.5 s requests (client-side, incl. connect)
    assert max(r[1] for r in ok) > 0.9  # the queued two waited for a slot (2 x 0.5 s)
    assert 'defectnas_requests_total{method="POST",route="/score",status="503"} 4.0' in metrics
    assert "defectnas_rejected_total 4.0" in metrics


def test_cached_requests_computed_on_the_loop_are_refused_too(model_dir, tmp_path):
    cache = tmp_path / "cache"
    build_cache(model_dir, read_catalog(catalog_frame())[0], cache)
    with serving(model_dir, cache, delay=0.2, max_concurrency=1, max_queue=1, request_timeout_ms=0) as (url, _, _):
        results = post_all(url, "/score", [{"query": "hose", "product_ids": ["p1"]}] * 6)
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1 and set(statuses) == {200, 503}, statuses


def test_probes_answer_under_load_and_the_deadline_answers_503(model_dir):
    with serving(model_dir, delay=0.6, max_concurrency=1, max_queue=1, request_timeout_ms=200) as (url, _, _):
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(post_all, url, "/score", [{"query": "hose", "titles": ["garden hose"]}] * 2)
            time.sleep(0.1)
            with httpx.Client(base_url=url, trust_env=False, timeout=5) as c:
                start = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                probe_s = time.perf_counter() - start
                results = running.result()
                in_progress = c.get("/metrics").text
                time.sleep(0.8)
                after = c.get("/metrics").text
    assert probe_s < 0.3  # not behind the 0.6 s request
    for status, seconds, r in results:  # one ran past its deadline, one waited in the queue past it
        assert status == 503 and "timed out after 200 ms" in r.json()["detail"] and r.headers["retry-after"] == "1"
        assert 0.15 < seconds < 0.55  # at the 200 ms deadline, not after the 0.6 s of work
    assert "defectnas_requests_in_progress 1.0" in in_progress  # the running work still holds its slot ...
    assert "defectnas_requests_in_progress 0.0" in after and "defectnas_timed_out_total 2.0" in after  # ... until it is done
    latency = {s.labels["le"]: s.value for f in text_string_to_metric_families(after) for s in f.samples
               if s.name == "defectnas_request_duration_seconds_bucket" and s.labels["status"] == "503"}
    assert latency["0.5"] == latency["+Inf"] == 2  # the histogram has the time to the 503, not the dropped work's 0.6 s


def test_graceful_shutdown_finishes_requests_in_flight(model_dir):
    with serving(model_dir, delay=0.5, request_timeout_ms=0) as (url, server, _):
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(post_all, url, "/v1/rerank", [{"query": "hose", "documents": ["garden hose"]}])
            time.sleep(0.15)
            server.should_exit = True  # what SIGTERM / Ctrl-C set
            (status, seconds, r), = running.result()
        deadline = time.monotonic() + 10
        while True:  # then it stops accepting connections
            try:
                httpx.get(url + "/healthz", trust_env=False, timeout=0.5)
            except httpx.ConnectError:
                break
            assert time.monotonic() < deadline, "server still accepting connections after shutdown"
            time.sleep(0.05)
    assert status == 200 and r.json()["results"][0]["index"] == 0 and seconds >= 0.45


def test_serve_refuses_negative_bounds(model_dir, capsys):
    for flag in ("--max-concurrency", "--max-queue", "--request-timeout-ms"):
        assert main(["serve", "--model", str(model_dir), flag, "-1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert flag in err and "\n" not in err.strip()
