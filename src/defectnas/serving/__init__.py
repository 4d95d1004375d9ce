"""Serving: a cache of product encodings and an HTTP scoring service with bounded latency.

Why a package: the catalogue changes slowly, so product titles are encoded once
(:mod:`.cache`, ``defectnas cache``) and a request only encodes its short query
(:mod:`.scorer`, served by :mod:`.app`, ``defectnas serve``). Modules:

- :mod:`.catalog`  — any product table or pairs dataset → one row per product (id, title)
- :mod:`.encoding` — the title and query halves of a two-tower score, as predict_proba computes them
- :mod:`.cache`    — the on-disk cache: build, incremental update, open (memory-mapped; float16 by default)
- :mod:`.ray_build` — a cache's titles encoded on Ray actors (``defectnas cache --ray-address``)
- :mod:`.reload`   — a running service picks up a new cache generation without a restart
- :mod:`.batching` — micro-batching: concurrent cached requests share one query-tower pass (``serve --batch-wait-ms``)
- :mod:`.scorer`   — one query against cached products or raw titles
- :mod:`.query_cache` — an LRU of query encodings (repeated queries skip the query tower)
- :mod:`.onnx_export` — ``defectnas export``: query tower, head (and title tower) as ONNX, optionally int8
- :mod:`.onnx_backend` — the scorer on onnxruntime (``serve --backend onnx``)
- :mod:`.app`      — the FastAPI app (``POST /score``, ``GET /healthz``)
- :mod:`.rerank`   — ``POST /v1/rerank`` in the shape rerank clients send
- :mod:`.metrics`  — ``GET /metrics`` in the Prometheus text format
- :mod:`.overload` — bounded slots and queue (503 + Retry-After beyond), the per-request deadline
- :mod:`.schema`   — the published OpenAPI schema, tightened to what the server enforces
"""

__all__ = ["BuildReport", "CacheError", "OnnxScorer", "ProductCache", "QueryCache", "Scorer", "ServeSettings", "build_cache", "create_app",
           "export_onnx", "load_scorer", "model_hash", "read_catalog"]

_HOMES = {
    "BuildReport": "cache", "CacheError": "cache", "ProductCache": "cache", "build_cache": "cache", "model_hash": "cache",
    "read_catalog": "catalog", "Scorer": "scorer", "ServeSettings": "app", "create_app": "app",
    "load_scorer": "scorer", "QueryCache": "query_cache", "OnnxScorer": "onnx_backend", "export_onnx": "onnx_export",
}


def __getattr__(name: str):
    # imported on first use: `defectnas cache` needs neither FastAPI nor uvicorn
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
