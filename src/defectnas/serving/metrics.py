"""``GET /metrics``: the service's counters in the Prometheus text exposition format (``prometheus_client``).

Why: an operator needs the request rate by route and status, the latency distribution, which
cache generation is being served and whether the query LRU pays off, from the tool they already
scrape with. Each app has its own registry (so several apps in one process, as in the tests, do
not mix counts). :class:`RequestMetrics` (ASGI middleware, outermost, so 413s of the body cap and
503s of the overload guard are counted too) counts every answered request by route, method and
status and observes its latency; :class:`ServiceCollector` reads the scorer and the admission
state at scrape time, so a swapped cache or scorer is reported as it is now. Routes outside the
app's own paths are counted under ``route="other"`` (a scan of random paths adds no series).

With ``serve --workers N`` each process keeps its own counts and a scrape is answered by
whichever worker takes it (``pid`` in ``defectnas_info`` says which).
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .. import __version__

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text format 0.0.4: what every Prometheus version scrapes
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds
ROUTES = ("/score", "/v1/rerank", "/healthz", "/metrics", "/openapi.json", "/docs")  # route label values (else "other")


class ServiceMetrics:
    """The registry of one app: request counts and latencies, and the service's state at scrape time."""

    def __init__(self, app_state) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("defectnas_requests", "HTTP requests answered, by route, method and status code",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("defectnas_request_duration_seconds", "time from a request's arrival to the end of its answer, "
                                 "by route and status code (a 503's is how fast overload is told)",
                                 ["route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(ServiceCollector(app_state))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ServiceCollector:
    """Gauges and counters read from the app's scorer and admission state when scraped."""

    def __init__(self, app_state) -> None:
        self.state = app_state

    def describe(self):
        return []  # values are read at scrape time only

    def collect(self):
        scorer, admission = self.state.scorer, getattr(self.state, "admission", None)
        info = GaugeMetricFamily("defectnas_info", "the served model (value 1)", labels=["model", "backend", "version", "pid"])
        info.add_metric([scorer.name, scorer.backend, __version__, str(os.getpid())], 1)
        yield info
        cache = scorer.cache
        yield GaugeMetricFamily("defectnas_cache_generation", "generation of the product cache being served (-1: no cache)",
                                value=cache.manifest.get("generation", 0) if cache is not None else -1)
        yield GaugeMetricFamily("defectnas_cache_products", "products in the served cache", value=len(cache) if cache is not None else 0)
        batcher = getattr(self.state, "batcher", None)
        if batcher is not None:
            yield CounterMetricFamily("defectnas_query_batches", "query-tower passes of micro-batched requests (serve --batch-wait-ms)",
                                      value=batcher.batches)
            yield CounterMetricFamily("defectnas_batched_requests", "requests answered through micro-batches", value=batcher.requests)
        watcher = getattr(self.state, "cache_watcher", None)
        if watcher is not None:
            yield CounterMetricFamily("defectnas_cache_reloads", "new cache generations swapped in without a restart", value=watcher.reloads)
            yield CounterMetricFamily("defectnas_cache_reload_failures", "new cache generations not served (unreadable, or another "
                                      "model's): the previous one stays", value=watcher.failures)
        stats = scorer.query_cache.stats()
        yield GaugeMetricFamily("defectnas_query_cache_capacity", "query encodings the LRU keeps at most (0: off)", value=stats["capacity"])
        yield GaugeMetricFamily("defectnas_query_cache_size", "query encodings in the LRU", value=stats["size"])
        yield CounterMetricFamily("defectnas_query_cache_hits", "query encodings answered from the LRU", value=stats["hits"])
        yield CounterMetricFamily("defectnas_query_cache_misses", "query encodings computed", value=stats["misses"])
        yield GaugeMetricFamily("defectnas_query_cache_hit_ratio", "hit rate of the LRU: hits / (hits + misses), 0 before any lookup",
                                value=stats["hit_rate"])
        if admission is not None:
            yield GaugeMetricFamily("defectnas_requests_in_progress", "requests holding a slot (being served)", value=admission.active)
            yield GaugeMetricFamily("defectnas_requests_waiting", "requests queued for a slot", value=admission.waiting)
            yield GaugeMetricFamily("defectnas_max_concurrency", "slots (serve --max-concurrency; 0: no bound)", value=admission.concurrency)
            yield GaugeMetricFamily("defectnas_max_queue", "queue length (serve --max-queue)", value=admission.queue)
            yield CounterMetricFamily("defectnas_rejected", "requests refused (503) because every slot and the queue were taken",
                                      value=admission.rejected)
            yield CounterMetricFamily("defectnas_timed_out", "requests answered 503 at their deadline (serve --request-timeout-ms)",
                                      value=admission.timed_out)


class RequestMetrics:
    """ASGI middleware: every HTTP request's route, method, status and latency into :class:`ServiceMetrics`."""

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, end = time.perf_counter(), 500, None  # an exception before any answer is a 500

        async def counted_send(message) -> None:
            nonlocal status, end
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                end = time.perf_counter()  # the answer is out (a deadline's 503 is, while its dropped work may go on)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            seconds = (end or time.perf_counter()) - start
            self.metrics.observe(route, scope["method"] if scope["method"] in _METHODS else "other", status, seconds)


_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
