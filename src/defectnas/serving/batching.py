"""Micro-batching: cached-product requests that arrive together share one query-tower pass.

Why: the query tower is most of a cached request's cost (six MiniLM layers for ``train``'s
default model), and on a CPU at batch 1 it is bound by per-call overhead (small matrix products,
operator dispatch), not by arithmetic: one pass over 8 queries took ~4× less time than 8 passes
over one (on the shared 2-core machine). Under
concurrency, requests queue behind each other on the event loop anyway, so they can as well be
encoded together. :class:`MicroBatcher` holds a cached-product request for at most ``wait``
seconds (or until ``max_batch`` are waiting), then encodes the distinct queries the query LRU
does not have in one padded pass (exact up to float rounding: padding is masked) and scores each
request's products with its own query, on the event loop as unbatched requests are computed.
Every request still reads the cache once, when it arrives (unknown ids are answered at once), so
a cache swap (:mod:`.reload`) never mixes generations within a request.

Off by default (``serve --batch-wait-ms 0``). The PyTorch backend and fp32 ONNX exports batch
(their scorers share ``encode_queries`` / ``rows`` / ``score_rows``); an int8 export is refused
(``batching_refused``): its activations are quantized over the whole batch, so a query's score
would depend on the queries that arrived with it.
"""

from __future__ import annotations

import asyncio

import numpy as np

from ..data import normalize_text


class MicroBatcher:
    """Batches :meth:`score_ids` calls of one event loop; ``scorer`` is a :class:`~.scorer.Scorer` or an
    fp32 :class:`~.onnx_backend.OnnxScorer`."""

    def __init__(self, scorer, wait: float, max_batch: int = 32) -> None:
        if wait <= 0 or max_batch < 1:
            raise ValueError(f"need wait > 0 seconds and max_batch >= 1, got {wait} and {max_batch}")
        self.scorer, self.wait, self.max_batch = scorer, wait, max_batch
        self.pending: list[tuple[str, object, np.ndarray, asyncio.Future]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.batches = 0  # query-tower passes (flushes) made
        self.requests = 0  # requests answered through them

    async def score_ids(self, query: str, ids: list[str], locale: str | None = None) -> np.ndarray:
        """Probabilities (N,) of cached products, as ``Scorer.score_ids`` (same errors, raised at once)."""
        cache = self.scorer.cache
        rows = self.scorer.rows(ids, locale)  # UnknownProducts / AmbiguousProducts now, not after the wait
        future = asyncio.get_running_loop().create_future()
        self.pending.append((normalize_text(query), cache, rows, future))
        if len(self.pending) >= self.max_batch:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.wait, self.flush)
        return await future

    def flush(self) -> None:
        """Encode the waiting requests' queries together and answer each (on the event loop)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        live = [item for item in batch if not item[3].done()]  # a request past its deadline was cancelled
        if not live:
            return
        try:
            encodings = self.scorer.encode_queries([q for q, *_ in live])
            for (_, cache, rows, future), encoding in zip(live, encodings):
                future.set_result(self.scorer.score_rows(encoding, cache, rows))
        except Exception as e:  # noqa: BLE001 — every waiting request gets the error, none hangs
            for *_, future in live:
                if not future.done():
                    future.set_exception(e)
        self.batches += 1
        self.requests += len(live)
