"""The HTTP scoring service (FastAPI): ``POST /score``, ``POST /v1/rerank`` (:mod:`.rerank`),
``GET /healthz``, ``GET /metrics`` (:mod:`.metrics`), OpenAPI at ``/docs`` (tightened by :mod:`.schema`).
A new cache generation written into the served cache directory is picked up without a restart
(:mod:`.reload`, every ``cache_reload_s`` seconds).

Why these limits: a request's cost grows with its products and text lengths, so each is
bounded (:class:`ServeSettings`) and checked before any model work, and the raw body is capped
before it is parsed — by default at the largest JSON a request within the bounds can take
(:meth:`ServeSettings.body_limit`), so the cap refuses no request the bounds allow; the model runs in eval + inference mode with a fixed torch thread count,
so latency does not depend on what else the process does. Errors are one line,
``{"detail": "..."}``: 413 too many products or too large a body, 422 an invalid body (empty or
too long text — empty judged on what the model sees: a query of zero-width spaces is empty, and
one of unknown word pieces only is refused too —, neither or both of ``product_ids``/``titles``,
an id that several locales of the cache hold without ``locale``), 404 unknown product ids (named),
401 a missing or wrong ``X-API-Key`` (or ``Authorization: Bearer``) when a key is set, 503 with
``Retry-After`` when overloaded or past the request deadline (:mod:`.overload`). No endpoint
touches files the caller names: the model and cache are fixed when the app is created.

Concurrency: a request for cached products costs about a millisecond of CPU and is computed on
the event loop itself (a hand-off to a thread costs as much on a busy machine); raw titles run
the title tower and go to at most ``title_workers`` threads, so they cannot starve cached
requests. To use more cores, run several processes (:func:`run_workers`, ``--workers``); to encode
concurrent queries in one pass, micro-batching (:mod:`.batching`, ``batch_wait_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio
import pydantic_core
import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..data._common import one_line
from ..errors import ConfigError
from . import schema
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import RequestMetrics, ServiceMetrics
from .overload import Admission, OverloadGuard
from .reload import CacheWatcher
from .scorer import AmbiguousProducts, Scorer, UnknownProducts, load_scorer

API_KEY_HEADER = "X-API-Key"
# asyncio's event loop, never uvloop (which uvicorn's "auto" picks when it is installed): a cached
# request is computed on the loop, and the overload guard (.overload) admits or refuses requests
# that arrived during a computation before the next one starts; asyncio polls the sockets between
# two ready callbacks, uvloop only once they are all run, so under uvloop those requests reach the
# guard one at a time and none is refused (tests/serving/test_overload.py fails under uvloop)
SERVE_LOOP = "asyncio"
API_KEY_ENV = "DEFECTNAS_API_KEY"
# the derived body cap (ServeSettings.body_limit) is the worst-case JSON of a request within the bounds:
JSON_CHAR_BYTES = 12  # the most one character takes in JSON: one beyond the BMP escaped as a surrogate pair, \uD83D\uDE00
JSON_ITEM_BYTES = 128  # a listed product around its text: quotes, comma, {"text": ...} or {"id": ...} (keys escaped too), indented up to 8 spaces
JSON_OTHER_BYTES = 4096  # field names, top_n and the other numbers, booleans, braces and the whitespace between fields


@dataclass
class ServeSettings:
    """Bounds and runtime of the service."""

    max_products: int = 1000  # products per request (more: 413)
    max_query_chars: int = 200  # characters of the query (more: 422)
    max_title_chars: int = 500  # characters of each raw title (more: 422)
    max_id_chars: int = 200  # characters of each product id, and of locale and rerank's model (more: 422)
    max_body_bytes: int = 0  # request body cap (more: 413); 0: the worst-case JSON of a request within the bounds above (body_limit)
    threads: int = 1  # torch intra-op threads (fixed, so latency does not depend on load)
    title_workers: int = 2  # raw-title requests encoded at once (more wait), so they cannot starve cached ones
    api_key: str | None = None  # when set, /score needs header X-API-Key with this value
    backend: str = "torch"  # "torch": a model directory on PyTorch; "onnx": an ONNX export on onnxruntime (defectnas export)
    query_cache: int = 4096  # query encodings kept (least recently used out; 0: off); hits and misses in /healthz
    max_int8_ap_loss: float = 0.01  # an int8 export whose saved AP loss is over this is refused ...
    allow_int8_loss: bool = False  # ... unless this is set
    max_concurrency: int = 16  # requests served at once (0: no bound); beyond, they wait in the queue
    max_queue: int = 64  # requests waiting for a slot; beyond, 503 with Retry-After at once
    request_timeout_ms: float = 30_000  # a request not answered this long after arriving gets 503 (0: no deadline)
    cache_reload_s: float = 2.0  # seconds between checks of the cache directory for a new generation (0: never; see .reload)
    batch_wait_ms: float = 0.0  # cached-product requests arriving within this many ms share one query-tower pass (0: off; .batching)
    max_batch: int = 32  # ... at most this many
    workers: int = 1  # server processes of this service (run_workers sets it)
    connection_balance: str = ""  # the workers' shared connection table (.balance; set by serve --workers N on Linux; "": off)

    def body_limit(self) -> int:
        """The request body cap in bytes: ``max_body_bytes``, or (0) the largest body a request within
        the other bounds can take as JSON, so that no such request is refused as too large.

        Why the worst case: JSON clients escape non-ASCII text by default (Python's ``json.dumps``,
        ``requests``' ``json=``), and an escape takes 6 bytes per character of the BMP and 12 per
        character beyond it (a surrogate pair), against UTF-8's 3 and 4; a cap at 4 bytes a
        character refused requests within every bound. So each character counts
        :data:`JSON_CHAR_BYTES`, each listed product :data:`JSON_ITEM_BYTES` around its text, and
        the query, ``locale`` and rerank ``model`` (both at most ``max_id_chars``) count too."""
        if self.max_body_bytes > 0:
            return self.max_body_bytes
        chars = self.max_query_chars + 2 * self.max_id_chars + self.max_products * max(self.max_title_chars, self.max_id_chars)
        return JSON_CHAR_BYTES * chars + JSON_ITEM_BYTES * self.max_products + JSON_OTHER_BYTES


# ---------------------------------------------------------------- schema
def _integral(value):
    """JSON's integer is any number without a fraction (5.0 is 5), as JSON Schema has it; bool is not one."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]  # an integer as JSON Schema has it (no strings, no bools)
ProductId = StrictStr | JsonInt  # a cached product's id: text, or an integer (taken as its digits)


class ScoreRequest(BaseModel):
    """One query and either cached product ids or raw product titles."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "cordless drill", "product_ids": ["100001", "100002"]},
        {"query": "cordless drill", "titles": ["DeWalt 20V cordless drill", "Garden hose 50 ft"]},
    ]})
    query: StrictStr = Field(description="the search query")
    product_ids: list[ProductId] | None = Field(None, description="ids of cached products")
    locale: StrictStr | None = Field(None, description="the products' locale (product_locale, e.g. us, es, jp) when the cache "
                                     "keys products by locale (ESCI); needed for an id that several locales hold")
    titles: list[StrictStr] | None = Field(None, description="raw product titles, encoded on the fly")


class ScoreResult(BaseModel):
    product_id: str | None = Field(None, description="set when scoring by product_ids")
    title: str | None = Field(None, description="set when scoring by titles")
    defect_probability: float
    is_defect: bool = Field(description="defect_probability reaches the model's threshold")


class ScoreResponse(BaseModel):
    model: str = Field(description="model directory name @ first 12 hex digits of its sha256")
    results: list[ScoreResult]


class Health(BaseModel):
    status: str
    model: str
    model_hash: str
    products: int = Field(description="products in the loaded cache (0 without a cache)")
    matching: bool
    threshold: float
    version: str
    backend: str = Field("torch", description="torch (PyTorch) or onnx (onnxruntime, fp32 or int8: see model)")
    query_cache: dict = Field(default_factory=dict, description="the query-encoding LRU: capacity, size, hits, misses, hit_rate")
    cache_generation: int | None = Field(None, description="the served cache generation (null without a cache)")
    worker: dict | None = Field(None, description="with several worker processes: the answering one's pid, its connections in "
                                                  "the last second, how many it closed to even the split, and the workers up "
                                                  "and all their connections as the shared table says (null with one process; "
                                                  "the last four null without --balance-connections)")
    cache_update_refused: str | None = Field(None, description="why the newest cache generation on disk is not served (one line; "
                                                              "null when the served one is the newest)")


class Problem(BaseModel):
    detail: str


class AnswerJSON(JSONResponse):
    """A ``/score`` or ``/v1/rerank`` answer, built from plain dicts already checked against the
    response model, serialised by pydantic-core (Rust) instead of ``json.dumps``: 0.02 against
    0.13 ms for 100 results, the same JSON. A float that is not finite (never a probability the
    model gives) becomes ``null``, so the body is always valid JSON."""

    def render(self, content) -> bytes:
        return pydantic_core.to_json(content, inf_nan_mode="null")


# ------------------------------------------------------------------- app
def create_app(model_dir: str | Path, cache_dir: str | Path | None = None, settings: ServeSettings | None = None,
               scorer: Scorer | None = None) -> FastAPI:
    """Load the model (and cache) and build the app; raises CacheError/DataError on bad inputs."""
    settings = settings or ServeSettings()
    if settings.backend == "onnx":
        torch.set_num_threads(1)  # onnxruntime has its own threads; torch only widens ~100 cached rows (waking a second thread cost ~0.2 ms)
    elif settings.threads > 0:
        torch.set_num_threads(settings.threads)
    scorer = scorer or load_scorer(model_dir, cache_dir, backend=settings.backend, threads=settings.threads, query_cache=settings.query_cache,
                                   max_int8_ap_loss=settings.max_int8_ap_loss, allow_int8_loss=settings.allow_int8_loss)
    scorer.score_titles("warm up", ["warm up"])  # first-call allocations happen now, not in a request
    if scorer.cache is not None and len(scorer.cache):
        scorer.score_ids("warm up", scorer.cache.ids[:1], scorer.cache.locales[0] if scorer.cache.locales else None)
    scorer.query_cache.reset()  # the counts and entries start with the first request

    watcher = CacheWatcher(scorer, settings.cache_reload_s) if scorer.cache is not None and settings.cache_reload_s > 0 else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(watcher.run()) if watcher is not None else None  # new cache generations, served without a restart
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="defectnas", version=__version__, lifespan=lifespan,
                  description="Defect probability of (query, product) pairs: is this product irrelevant to this query?")
    app.state.scorer, app.state.settings, app.state.cache_watcher = scorer, settings, watcher
    app.state.batcher = None
    if settings.batch_wait_ms > 0:
        if scorer.batching_refused:
            raise ConfigError(f"--batch-wait-ms: {scorer.batching_refused}")
        from .batching import MicroBatcher

        app.state.batcher = MicroBatcher(scorer, settings.batch_wait_ms / 1000, settings.max_batch)
    title_limiter = anyio.CapacityLimiter(max(1, settings.title_workers))
    app.state.admission = Admission(settings.max_concurrency, settings.max_queue)
    app.state.metrics = metrics = ServiceMetrics(app.state)
    # outermost last: metrics see every answer (413, 503 too), the guard runs before the body is read
    app.add_middleware(BodyLimit, limit=settings.body_limit())
    app.add_middleware(OverloadGuard, admission=app.state.admission, timeout=settings.request_timeout_ms / 1000)
    app.add_middleware(RequestMetrics, metrics=metrics)
    balancer = None
    if settings.connection_balance and settings.workers > 1:  # outermost: a 503 or 413 can carry the Connection: close too
        from .balance import BalanceConnections, ConnectionBalancer

        balancer = ConnectionBalancer(settings.connection_balance, settings.workers)
        app.add_middleware(BalanceConnections, balancer=balancer)
    app.state.balancer = balancer

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in kind.lower():  # FastAPI then never parses the body: say why, not "not a dict"
            return JSONResponse({"detail": "invalid request: send the body as JSON with the header Content-Type: application/json "
                                           f"(got {one_line(kind) if kind else 'no Content-Type'})"}, status_code=422)
        return JSONResponse({"detail": _validation_line(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's answer to bytes that are not UTF-8
            cause = exc.__cause__
            return JSONResponse({"detail": one_line(f"invalid request: body is not valid JSON ({cause or 'unreadable'})")}, status_code=422)
        return await http_exception_handler(request, exc)

    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the key given to defectnas serve")
    bearer = HTTPBearer(auto_error=False, description="the same key as a bearer token (what rerank clients send)")

    def check_key(key: str | None = Depends(key_header), token: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        key = key or (token.credentials if token is not None else None)
        if not key or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            raise HTTPException(401, f"missing or wrong API key (header {API_KEY_HEADER}, or Authorization: Bearer)")

    errors = {c: {"model": Problem} for c in (401, 404, 413, 422)}

    @app.get("/metrics", response_class=PlainTextResponse, summary="counters in the Prometheus text format",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text exposition format 0.0.4"}})
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/healthz", response_model=Health, summary="200 when the model (and cache) are loaded")
    def healthz() -> Health:
        cache = scorer.cache
        return Health(status="ok", model=scorer.name, model_hash=scorer.model_hash, products=len(cache) if cache else 0,
                      matching=bool(scorer.matching), threshold=scorer.threshold, version=__version__,
                      backend=scorer.backend, query_cache=scorer.query_cache.stats(),
                      cache_generation=getattr(cache, "generation", None) if cache else None,
                      worker=None if settings.workers < 2 else {"pid": os.getpid(),
                                                                "connections": balancer.connections() if balancer else None,
                                                                "closed_for_balance": balancer.closed if balancer else None,
                                                                **_shares(balancer)},
                      cache_update_refused=watcher.refused if watcher is not None else None)

    @app.post("/score", response_model=ScoreResponse, responses=errors, summary="defect probability of each product for the query",
              dependencies=[Depends(check_key)] if settings.api_key else [])
    async def score(request: ScoreRequest) -> AnswerJSON:
        field, items = _check(request, settings)
        query = request.query
        _check_texts(scorer, query, field, items)
        _check_locale(scorer, request.locale, field == "product_id")
        probs = await score_items(scorer, query, field, items, request.locale, title_limiter, app.state.batcher)
        threshold = scorer.threshold
        results = [{field: item, "defect_probability": p, "is_defect": p >= threshold} for item, p in zip(items, probs.tolist())]
        return AnswerJSON({"model": scorer.name, "results": results})  # already valid: skip re-validation

    from .rerank import add_rerank_route

    add_rerank_route(app, scorer, settings, title_limiter, [Depends(check_key)] if settings.api_key else [], errors)
    schema.install(app, settings, scorer)  # the published schema states exactly-one-of, the bounds and every status sent
    return app


# --------------------------------------------------------------- running
SERVE_ENV = "DEFECTNAS_SERVE"  # JSON {"model": ..., "cache": ..., "settings": {...}} for app_from_env


def open_listeners(host: str, port: int, workers: int, backlog: int = 2048) -> tuple[list, int]:
    """What ``serve`` listens with, and the port it got (``port`` 0: one the system chose).

    Bound here, before the service says where it serves, so that an address in use, a port out of
    range or a host that does not resolve is one ConfigError line rather than a worker's stack
    trace after "serving ...". One worker, or ``port`` 0, or not Linux: one listening socket
    (workers share it). Several workers on Linux: a :class:`ReusePortListener` that each worker
    binds for itself with ``SO_REUSEPORT`` (see :func:`run_workers`) — after checking that no
    socket at all holds the address, because a reuse-port bind would otherwise *join* another
    server of the same user on that port and split its traffic between two models. Sockets are
    made with protocol IPPROTO_TCP: uvicorn's own binding uses protocol 0, so asyncio never sets
    TCP_NODELAY on accepted connections and every keep-alive response waits ~40 ms for a delayed
    ACK (uvicorn issue #3149).
    """
    import sys

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0-65535, got {port}")
    try:
        if workers > 1 and port and sys.platform.startswith("linux"):
            _bind(host, port, reuse_port=False).close()  # nothing holds the address, a reuse-port group of another server neither
            return [ReusePortListener(host, port, backlog)], port
        sock = _listen(host, port, backlog, reuse_port=False)
        return [sock], sock.getsockname()[1]
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def run_workers(model_dir: str | Path, cache_dir: str | Path | None, settings: ServeSettings, workers: int, sockets: list,
                balance_connections: bool = False, **uvicorn_options) -> None:
    """Serve with ``workers`` processes under uvicorn's supervisor (which restarts a dead worker),
    listening on ``sockets`` from :func:`open_listeners`.

    Each worker loads the model and memory-maps the cache itself (the operating system shares
    the cache's pages). With a :class:`ReusePortListener` each worker listens on a socket of its
    own and the kernel spreads new connections over them: on one shared socket, asyncio's accept
    loop takes every pending connection at once, so the first worker to wake held all 8
    keep-alive clients of the benchmark while the other idled (measured: 246 requests/s on 2
    workers, as on 1). The kernel spreads *connections*, not requests, and keep-alive connections
    stay where they landed, so with ``balance_connections`` the workers also even out their
    connections (:mod:`.balance`: a worker above its share closes one after its answer).
    """
    import dataclasses

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from .balance import create_table

    table = create_table() if balance_connections and isinstance(sockets[0], ReusePortListener) else None
    settings = dataclasses.replace(settings, workers=workers, connection_balance=str(table) if table else "")
    os.environ[SERVE_ENV] = json.dumps({"model": str(model_dir), "cache": cache_dir and str(cache_dir), "settings": vars(settings)})
    config = uvicorn.Config("defectnas.serving.app:app_from_env", factory=True, workers=workers, **uvicorn_options)
    try:
        Multiprocess(config, sockets=sockets).run()  # a ReusePortListener is unpickled in each worker as its own socket
    finally:
        if table is not None:
            table.unlink(missing_ok=True)


class ReusePortListener:
    """A listening TCP socket that each worker process binds for itself, with ``SO_REUSEPORT``.

    uvicorn hands its workers the sockets it is given by pickling them into the spawned process;
    this object pickles as the instruction to bind (:func:`listen_reuseport`), so every worker —
    a replacement for a dead one too — gets its own socket in the same reuse-port group, and the
    kernel (Linux ≥ 3.9) picks one per new connection by a hash of its addresses. Only processes
    of the same user can join the group, and :func:`open_listeners` first checks that none holds
    the address."""

    def __init__(self, host: str, port: int, backlog: int) -> None:
        self.host, self.port, self.backlog = host, int(port), int(backlog)

    def __reduce__(self):
        return listen_reuseport, (self.host, self.port, self.backlog)


def listen_reuseport(host: str, port: int, backlog: int):
    """A listening TCP socket bound to (host, port) with SO_REUSEADDR and SO_REUSEPORT."""
    return _listen(host, port, backlog, reuse_port=True)


def _listen(host: str, port: int, backlog: int, reuse_port: bool):
    """:func:`_bind`, then listening, and inheritable (uvicorn hands sockets to spawned workers)."""
    sock = _bind(host, port, reuse_port)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _bind(host: str, port: int, reuse_port: bool):
    """A TCP socket (protocol IPPROTO_TCP) bound to ``host`` (a name or an IPv4/IPv6 address) and
    ``port``, with SO_REUSEADDR (a restart does not wait for old connections' TIME_WAIT)."""
    import socket

    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _shares(balancer) -> dict:
    up, total = balancer.shares() if balancer else (None, None)
    return {"workers_up": up, "connections_all_workers": total}


def app_from_env() -> FastAPI:
    """The app of one worker process of :func:`run_workers`."""
    spec = json.loads(os.environ[SERVE_ENV])
    return create_app(spec["model"], spec.get("cache"), ServeSettings(**spec.get("settings", {})))


def _check(request: ScoreRequest, s: ServeSettings) -> tuple[str, list[str]]:
    """("product_id" | "title", the items as strings), or an HTTPException with the reason."""
    if (request.product_ids is None) == (request.titles is None):
        raise HTTPException(422, "give exactly one of product_ids (cached products) or titles (raw titles)")
    field, items = ("product_id", request.product_ids) if request.titles is None else ("title", request.titles)
    if len(items) > s.max_products:
        raise HTTPException(413, f"too many products: {len(items)} > {s.max_products} per request")
    if not items:
        raise HTTPException(422, f"{field}s is empty")
    _check_query(request.query, s)
    _check_short("locale", request.locale, s)
    items = [str(i) for i in items]
    limit = s.max_id_chars if field == "product_id" else s.max_title_chars
    for i, item in enumerate(items):
        if not item.strip():
            raise HTTPException(422, f"{field}s[{i}] is empty")
        if len(item) > limit:
            raise HTTPException(422, f"{field}s[{i}] too long: {len(item)} > {limit} characters")
    return field, items


async def score_items(scorer: Scorer, query: str, field: str, items: list[str], locale: str | None, title_limiter, batcher=None):
    """Probabilities of ``items`` (cached product ids or raw titles); HTTPException 404/422 for
    unknown or ambiguous ids. With a ``batcher`` (:class:`.batching.MicroBatcher`), cached ids
    wait for it (requests arriving together share one query-tower pass)."""
    try:
        if field == "product_id" and batcher is not None:
            return await batcher.score_ids(query, items, locale)
        if field == "product_id":
            # cached products cost about a millisecond: computed right here, because handing
            # them to a worker thread costs more than that on a busy machine
            return scorer.score_ids(query, items, locale)
        # raw titles run the title tower (~1 ms per title): a worker thread, so the event
        # loop keeps answering cached requests meanwhile (torch releases the GIL)
        return await anyio.to_thread.run_sync(scorer.score_titles, query, items, limiter=title_limiter)
    except UnknownProducts as e:
        shown = ", ".join(json.dumps(i) for i in e.ids[:10])
        more = f" (and {len(e.ids) - 10} more)" if len(e.ids) > 10 else ""
        where = f" in locale {json.dumps(e.locale)}" if e.locale is not None else ""
        why = ("; this server has no product cache (started without --cache): send titles, or serve with --cache DIR"
               if e.no_cache else "")
        raise HTTPException(404, one_line(f"unknown product id(s){where}: {shown}{more}{why}")) from None
    except AmbiguousProducts as e:
        shown = "; ".join(f"{json.dumps(i)} ({', '.join(locs)})" for i, locs in list(e.locales.items())[:10])
        raise HTTPException(422, one_line(f"product id(s) held by several locales of the cache: {shown}; "
                                          "give \"locale\" to say which product is meant")) from None


def _check_locale(scorer: Scorer, locale: str | None, by_ids: bool) -> None:
    if locale is not None and (not by_ids or scorer.cache is None or scorer.cache.locales is None):
        raise HTTPException(422, "locale applies only to product ids of a cache keyed by locale (built from a table with product_locale)")


def _check_query(query: str, s) -> None:
    """422 with the reason for an empty or over-long query (``/score`` and ``/v1/rerank`` alike)."""
    if not query.strip():
        raise HTTPException(422, "query is empty")
    if len(query) > s.max_query_chars:
        raise HTTPException(422, f"query too long: {len(query)} > {s.max_query_chars} characters")


def _check_short(name: str, value: str | None, s) -> None:
    """422 for a ``locale`` (or rerank's ``model``) longer than ``max_id_chars``: bounded, so that the
    derived body cap (:meth:`ServeSettings.body_limit`) covers every request within the bounds."""
    if value is not None and len(value) > s.max_id_chars:
        raise HTTPException(422, f"{name} too long: {len(value)} > {s.max_id_chars} characters")


def _check_texts(scorer: Scorer, query: str, field: str, items: list[str]) -> None:
    """422 naming the field when the model would see nothing, or only unknown pieces, in a text."""
    problem = scorer.text_problems([query])[0]
    if problem:
        raise HTTPException(422, f"query: {problem} once normalised and tokenised (nothing the model can score)")
    if field == "title":
        for i, problem in enumerate(scorer.text_problems(items)):
            if problem:
                raise HTTPException(422, f"titles[{i}]: {problem} once normalised and tokenised (nothing the model can score)")


def _validation_line(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request body"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return one_line(f"invalid request: body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})")
    loc = [p for p in first.get("loc", ()) if p != "body"]
    if len(loc) >= 3 and loc[0] == "documents" and isinstance(loc[1], int):  # a rerank document that is none of its three forms
        documents = exc.body.get("documents") if isinstance(exc.body, dict) else None
        sent = f"; got {_document_kind(documents[loc[1]])}" if isinstance(documents, list) and loc[1] < len(documents) else ""
        return one_line(f'invalid request: documents[{loc[1]}] must be a title string, {{"id": "..."}} (a cached product) or '
                        f'{{"text": "..."}} (a title){sent}')
    where = ".".join(str(p) for p in loc) or "body"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return one_line(f"invalid request: {where}: {first.get('msg', 'invalid')}{more}")


def _document_kind(document) -> str:
    """What a rerank document that is none of the three forms was, so the 422 says what to change
    (an empty object is not "both keys", a number not a wrong key)."""
    if not isinstance(document, dict):
        return _json_kind(document)
    keys = set(document)
    if not keys:
        return "an empty object"
    if {"id", "text"} <= keys:
        return 'both "id" and "text" (one key, not both)'
    if keys - {"id", "text"}:
        return "an object with " + ", ".join(json.dumps(k) for k in sorted(keys - {"id", "text"}))
    key = keys.pop()
    value = document[key]
    fraction = key == "id" and isinstance(value, float)  # an id may be an integer, not 1.5
    return f'"{key}": {"a number with a fraction" if fraction else _json_kind(value)}'


def _json_kind(value) -> str:
    """The JSON kind of a parsed value, as a message names it ("null", "a number", ...)."""
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "an array"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "an object")


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, checked before parsing."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                return await _reject(send, self.limit)
            return await self.app(scope, receive, send)
        # no length given (chunked): read the body up to the limit, then replay it
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await _reject(send, self.limit)
            chunks.append(message)
            if not message.get("more_body", False):
                break
        return await self.app(scope, _replay(chunks, receive), send)


async def _reject(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body too large: over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list, then=None):
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
