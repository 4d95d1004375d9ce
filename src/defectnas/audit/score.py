"""Score a result log's shown pairs: queries encoded in batches, products from the cache.

Why a module of its own: scoring is where the audit's cost is, and it must give the scores
``DefectClassifier.predict_proba`` gives (the model's own tokenizer, eval mode and calibration:
the halves of :mod:`defectnas.serving.encoding`, which the service also uses) while encoding
each distinct query once and never a cached product again.

The unit of work is a *chunk*: rows of a few whole queries (see :func:`chunks`). A chunk is
scored by :func:`score_chunk` — its distinct queries not seen in an earlier chunk are encoded
in batches of equal token length (no padding) and remembered (:class:`QueryEncodings`), its
products are taken from the product cache (or, for a product the cache lacks but whose title
the log has, encoded on the fly), and the score head runs over ``score_batch`` pairs at a time,
in order of title length so each batch's matching layer reads only the title columns it uses.
The same chunks go to the same function locally and, with ``ray_address``, on Ray actors (one
model, one memory-mapped cache and one store of query encodings per actor), so both paths
compute the same numbers (bit for bit when no query repeats across chunks; otherwise up to
the float rounding of a query encoded in another batch).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from ..data import normalize_text
from ..errors import ConfigError
from ..model.classifier import Encoded
from ..model.matching import _weighted_norms
from ..serving.cache import take_encodings
from ..serving.encoding import TitleArrays, encode_titles, needs_tokens, title_encoded

QUERY_BATCH = 256  # queries per query-tower pass
QUERY_CACHE_BYTES = 64 << 20  # query encodings a scorer keeps across chunks (~3 KB each with the default model: ~20,000 queries)
QUERY_SLICE = 4096  # queries a batch's preparation encodes at once (bounds its tensors; large enough for full tower batches)


def chunks(batch: pd.DataFrame, chunk_rows: int) -> list[np.ndarray]:
    """Row positions of ``batch`` cut into chunks of whole queries, at most ``chunk_rows`` rows each
    (a query with more rows gets a chunk of its own). Rows of one query are kept in source order;
    queries in order of first appearance. A function of the batch alone, so every executor gets
    the same chunks."""
    codes, _ = pd.factorize(batch["_query"], sort=False)
    order = np.argsort(codes, kind="stable")  # (N,) rows grouped by query
    bounds = np.flatnonzero(np.diff(codes[order])) + 1  # starts of each query's run in `order`
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    out, current, size = [], [], 0
    for s, e in zip(starts, ends):
        if size and size + (e - s) > chunk_rows:
            out.append(np.concatenate(current))
            current, size = [], 0
        current.append(order[s:e])
        size += e - s
    if current:
        out.append(np.concatenate(current))
    return out


class ChunkScorer:
    """A loaded model and product cache that score chunks; the same object runs as a Ray actor.

    ``threads``: torch CPU threads of this scorer (0: leave torch's setting)."""

    def __init__(self, model_dir: str, cache_dir: str | None, threads: int = 0, score_batch: int = 2048) -> None:
        from ..estimator import DefectClassifier
        from ..serving.cache import ProductCache, model_hash

        if threads:
            torch.set_num_threads(threads)
        self.clf = DefectClassifier.load(model_dir)
        self.clf.model_.eval()
        self.cache = None
        if cache_dir is not None:
            self.cache = ProductCache(cache_dir)
            self.cache.check_model(model_hash(model_dir), model_dir)
        self.score_batch = score_batch
        self.queries = QueryEncodings()

    def row(self, product: str) -> int | None:
        """The cache row of a product key — a (locale, id) key, or a bare id that one product has — or None."""
        if self.cache is None:
            return None
        by_key = getattr(self.cache, "rows_by_key", self.cache.index)
        row = by_key.get(product)
        if row is None and getattr(self.cache, "locales", None) is None:  # a cache without locales: a (locale, id) key's bare id
            row = self.cache.index.get(product.split("\x1f", 1)[-1])
        return row

    def score(self, queries: list[str], products: list[str], titles: list[str | None]) -> np.ndarray:
        """Defect probabilities (N,) float64 of N pairs; NaN where the product is neither cached nor titled."""
        return score_chunk(self, queries, products, titles)

    def prepare(self, queries: Iterable[str]) -> None:
        """Encode the queries (raw log text) the next chunks will ask for, all in one go.

        Why: the query tower is most efficient on large batches (1.4–2.3 ms a query in batches
        of 128, 2.5–3.3 ms in batches of 8, one thread), and a chunk's queries new to the store
        split into a dozen token lengths of ~14 queries each on the 1M-row benchmark log; a
        whole log batch's new queries make batches several times larger."""
        with torch.inference_mode():
            self.queries.add(self.clf, (normalize_text(q) for q in queries))


def score_chunk(scorer: ChunkScorer, queries: list[str], products: list[str], titles: list[str | None]) -> np.ndarray:
    """See :class:`ChunkScorer.score`. Queries are raw log text (normalised here)."""
    clf = scorer.clf
    n = len(queries)
    probs = np.full(n, np.nan)
    if n == 0:
        return probs
    raw_codes, raw = pd.factorize(pd.Series(queries, dtype=object), sort=False)  # normalise each distinct logged query once
    norm_codes, q_texts = pd.factorize(pd.Series([normalize_text(q) for q in raw], dtype=object), sort=False)
    q_codes = norm_codes[raw_codes]  # (N,) index of each pair's query among the distinct normalised queries
    where = np.fromiter((-1 if (r := scorer.row(p)) is None else r for p in products), dtype=np.int64, count=n)  # (N,) cache rows
    cached = where >= 0
    has_title = np.fromiter((isinstance(t, str) and t != "" for t in titles), dtype=bool, count=n)
    fly = ~cached & has_title
    if not (cached | fly).any():
        return probs
    with torch.inference_mode():
        qenc = scorer.queries.encode(clf, list(q_texts))
        rows = np.flatnonzero(cached)
        if len(rows):
            probs[rows] = _score_pairs(clf, qenc, q_codes[rows], scorer.cache.arrays, where[rows], scorer.score_batch)
        rows = np.flatnonzero(fly)
        if len(rows):
            t_codes, t_texts = pd.factorize(pd.Series([normalize_text(titles[i]) for i in rows]), sort=False)
            arrays = encode_titles(clf, list(t_texts), normalized=True)  # each distinct title once
            probs[rows] = _score_pairs(clf, qenc, q_codes[rows], arrays, t_codes, scorer.score_batch)
    return probs


class QueryEncodings:
    """Encodings of normalised queries, kept across chunks: a query the log shows on many pages
    (in many chunks and batches) passes the query tower once, not once per chunk.

    Why a store: the query tower (six pre-trained layers) is the largest single cost of an audit,
    and real logs repeat their head queries on every day and page. Bounded (least recently
    used first out, ``limit_bytes`` of token states and vectors), so memory stays flat in the
    log's length. A query's encoding does not depend on the queries it was batched with (up to
    the float rounding of batched kernels, ~1e-7), so a remembered one gives the score a fresh
    one gives."""

    def __init__(self, limit_bytes: int = QUERY_CACHE_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.store: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()
        self.bytes = 0
        self.encoded = 0  # queries that passed the query tower (for tests and profiling)

    def encode(self, clf, texts: list[str]) -> Encoded:
        """Encodings of Q distinct normalised queries: tokens (Q, L, C), vector (Q, V), mask (Q, L);
        L is the longest query's token length, shorter ones padded with zeros (masked)."""
        fresh = [t for t in texts if t not in self.store]
        if fresh:
            self._keep(clf, fresh)
        items = []
        for text in texts:
            self.store.move_to_end(text)
            items.append(self.store[text])
        L = max(item[0].shape[0] for item in items)
        tokens = torch.zeros(len(items), L, items[0][0].shape[-1], dtype=items[0][0].dtype, device=items[0][0].device)
        mask = torch.zeros(len(items), L, dtype=torch.bool, device=items[0][2].device)
        for i, (tok, _, m) in enumerate(items):
            tokens[i, : tok.shape[0]] = tok
            mask[i, : m.shape[0]] = m
        vector = torch.stack([item[1] for item in items])
        self._evict(keep=len(texts))  # never the ones just used
        return Encoded(tokens, vector, mask)

    def add(self, clf, texts: Iterable[str]) -> None:
        """Encode and keep the queries not kept yet, :data:`QUERY_SLICE` at a time, until the store
        is full (the rest are encoded by the chunks that ask for them): a log batch of mostly
        distinct queries costs one slice's tensors and the store's bound, not the batch's."""
        fresh = [t for t in dict.fromkeys(texts) if t not in self.store]
        for start in range(0, len(fresh), QUERY_SLICE):
            if self.bytes >= self.limit_bytes:
                return
            self._keep(clf, fresh[start : start + QUERY_SLICE])
            self._evict(keep=0)

    def _keep(self, clf, fresh: list[str]) -> None:
        enc = _encode_queries(clf, fresh)
        self.encoded += len(fresh)
        lengths = enc.mask.sum(1).clamp(min=1).tolist()  # real tokens (right-padded; a query of no tokens keeps 1 column)
        for i, (text, length) in enumerate(zip(fresh, lengths)):
            item = (enc.tokens[i, :length].clone(), enc.vector[i].clone(), enc.mask[i, :length].clone())
            self.store[text] = item
            self.bytes += sum(t.numel() * t.element_size() for t in item)

    def _evict(self, keep: int) -> None:
        """Least recently used out until the store fits its bound, keeping the ``keep`` most recent."""
        while self.bytes > self.limit_bytes and len(self.store) > keep:
            _, old = self.store.popitem(last=False)
            self.bytes -= sum(t.numel() * t.element_size() for t in old)


def _encode_queries(clf, texts: list[str]) -> Encoded:
    """Encodings of Q distinct normalised queries: tokens (Q, L, C), vector (Q, V), mask (Q, L).

    Queries are bucketed by token length and each bucket is encoded without padding, so a query
    gets the encoding ``encode_query`` gives it alone (up to the float rounding of batched kernels)."""
    ids = clf.tokenizer_.encode(texts, clf.model_config_.query_max_len)  # (Q, Lmax) right-padded with 0
    lengths = np.maximum((ids != 0).sum(axis=1), 1)
    L = int(lengths.max())
    device = torch.device(clf.train_config_.device)
    tokens = vector = mask = None
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        for i in range(0, len(members), QUERY_BATCH):
            rows = members[i : i + QUERY_BATCH]
            enc = clf.model_.encode_query(torch.from_numpy(np.ascontiguousarray(ids[rows, :length])).to(device))
            if vector is None:
                C, V = enc.tokens.shape[-1], enc.vector.shape[-1]
                tokens = torch.zeros(len(texts), L, C, dtype=enc.tokens.dtype, device=device)
                vector = torch.zeros(len(texts), V, dtype=enc.vector.dtype, device=device)
                mask = torch.zeros(len(texts), L, dtype=torch.bool, device=device)
            idx = torch.from_numpy(rows).to(device)
            tokens[idx, :length] = enc.tokens
            vector[idx] = enc.vector
            mask[idx, :length] = enc.mask
    return Encoded(tokens, vector, mask)


def _score_pairs(clf, qenc: Encoded, q_codes: np.ndarray, arrays: TitleArrays, rows: np.ndarray, batch: int) -> np.ndarray:
    """Calibrated probabilities (n,) of pairs (query ``q_codes[i]``, title ``rows[i]`` of ``arrays``).

    With title token states (matching), pairs go through the head in order of title length, then
    of row: each batch's token states are cut after its longest title, so the matching layer
    (whose cost is linear in the title columns) reads ~18 of the cache's 32 columns on Home Depot
    instead of nearly always all 32, and within one length the rows of a memory-mapped cache are
    read forward (~6× faster than at random). Cutting padding columns is exact: they are masked."""
    device = torch.device(clf.train_config_.device)
    matching = needs_tokens(clf)
    n = len(rows)
    if matching:
        lengths = arrays.mask[rows].sum(axis=1)  # (n,) title token counts (the mask is right-padded)
        order = np.lexsort((rows, lengths))
    else:
        order = np.argsort(rows, kind="stable")
    head = QueryHead.of(clf.model_, qenc)
    logits = np.empty(n, dtype=np.float64)
    for start in range(0, n, batch):
        part = order[start : start + batch]
        where = rows[part]
        qi = torch.from_numpy(q_codes[part]).to(device)
        used = qenc.mask.index_select(0, qi).any(0)  # (L,) query columns a query of the batch uses
        Lq = int(used.nonzero().max()) + 1 if used.any() else 1  # drop query padding no query of the batch uses
        t = title_encoded(take_encodings(arrays, where), device, matching)  # the batch's rows (a cache's may be float16, unpadded)
        if head is not None:
            out = head.score(qi, Lq, t)
        else:  # a head QueryHead does not know (co-attention): the model's own score
            out = clf.model_.score(Encoded(qenc.tokens[qi, :Lq], qenc.vector[qi], qenc.mask[qi, :Lq]), t)
        logits[part] = out.double().cpu().numpy()
    return clf.calibrator_.transform_logits(logits)


class QueryHead:
    """``DefectNet.score`` for pairs of a few distinct queries and many titles, with each query's
    share of the work done once per query instead of once per pair.

    Why: in an audit every query is scored against tens to hundreds of products. The head's first
    dense layer is linear in its input [q, t, q⊙t, |q−t|, matching], so its q block (a quarter of
    the layer) is a property of the query, and the blocks are added by ``addmm`` without building
    the (pairs, 4V + 4P) feature matrix; of the matching layer's cosines, the norms of the query's
    tokens and pooled vector under each perspective, and the query vector scaled by the
    perspective weights, are properties of the query too. Everything else is the model's own
    operations on its own weights (the rest of the head runs the model's modules), so the
    logits equal ``model.score``'s up to float rounding (tests/audit/test_score.py).
    ``of`` returns None for a model whose score is not this shape (co-attention)."""

    def __init__(self, model, qenc: Encoded) -> None:
        first = model.head[0]
        V = qenc.vector.shape[1]
        W = first.weight  # (H, 4V [+ 4P])
        self.model, self.qenc, self.V = model, qenc, V
        self.w_t, self.w_qt, self.w_abs = W[:, V : 2 * V].T, W[:, 2 * V : 3 * V].T, W[:, 3 * V : 4 * V].T  # (V, H) each
        self.per_query = torch.addmm(first.bias, qenc.vector, W[:, :V].T)  # (Q, H): the q block and the bias
        self.rest = model.head[1:]
        self.matching, self.late = model.matching, getattr(model, "late", None)
        if self.late is not None:  # late interaction: the model's own module on the batch's token states, its columns last
            self.w_l = W[:, W.shape[1] - self.late.out_features :].T  # (4P, H)
        if self.matching is not None:
            d = model.cfg.d_model
            self.d, self.w_m = d, W[:, 4 * V : 4 * V + self.matching.out_features].T  # (4P, H)
            self.w2 = self.matching.weight.square()  # (P, d)
            qd = qenc.vector[:, :d]
            self.q_scaled = (qd[:, None, :] * self.w2[None]).transpose(1, 2).contiguous()  # (Q, d, P): q ⊙ w_p²
            self.q_norm = _weighted_norms(qd, self.w2)  # (Q, P): ‖q ⊙ w_p‖
            self.q_token_norms = _weighted_norms(qenc.tokens, self.w2)  # (Q, L, P): ‖x ⊙ w_p‖ of each query token

    @classmethod
    def of(cls, model, qenc: Encoded) -> "QueryHead | None":
        first = model.head[0] if isinstance(model.head, torch.nn.Sequential) else None
        P = sum(m.out_features for m in (model.matching, getattr(model, "late", None)) if m is not None)
        if (model.coattention is not None or not isinstance(first, torch.nn.Linear)
                or first.in_features != 4 * qenc.vector.shape[1] + P):
            return None
        return cls(model, qenc)

    def score(self, qi: torch.Tensor, Lq: int, t: Encoded) -> torch.Tensor:
        """Logits (B,) of pairs (query ``qi[b]`` of the chunk, title ``b`` of ``t``); ``Lq``: query
        columns any query of the batch uses."""
        qv, tv = self.qenc.vector.index_select(0, qi), t.vector  # index_select: rows gathered far faster than by [qi]
        h = torch.addmm(self.per_query.index_select(0, qi), tv, self.w_t)
        h.addmm_(qv * tv, self.w_qt)
        h.addmm_((qv - tv).abs(), self.w_abs)
        if self.matching is not None:
            features = torch.cat([self._title_side(qi, t), self._query_side(qi, Lq, tv[:, : self.d])], dim=-1)  # (B, 4P)
            h.addmm_(features, self.w_m)
        if self.late is not None:
            q = self.qenc
            h.addmm_(self.late(q.tokens[:, :Lq].index_select(0, qi), q.mask[:, :Lq].index_select(0, qi), t.tokens, t.mask), self.w_l)
        return self.rest(h).squeeze(-1)

    def _title_side(self, qi: torch.Tensor, t: Encoded) -> torch.Tensor:
        """Title tokens against the query's pooled vector: MultiPerspectiveMatching._match(t.tokens, t.mask, q)."""
        num = torch.bmm(t.tokens, self.q_scaled.index_select(0, qi))  # (B, T, P)
        cos = num / (_weighted_norms(t.tokens, self.w2) * self.q_norm.index_select(0, qi)[:, None, :])
        return _max_mean(cos, t.mask)

    def _query_side(self, qi: torch.Tensor, Lq: int, td: torch.Tensor) -> torch.Tensor:
        """Query tokens against the title's pooled vector: MultiPerspectiveMatching._match(q.tokens, q.mask, t)."""
        tokens = self.qenc.tokens[:, :Lq].index_select(0, qi)  # (B, Lq, d)
        num = torch.bmm(tokens, (td[:, None, :] * self.w2[None]).transpose(1, 2))  # (B, Lq, P)
        cos = num / (self.q_token_norms[:, :Lq].index_select(0, qi) * _weighted_norms(td, self.w2)[:, None, :])
        return _max_mean(cos, self.qenc.mask[:, :Lq].index_select(0, qi))


def _max_mean(cos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[max, mean] over real tokens of cosines (B, T, P) → (B, 2P), as MultiPerspectiveMatching._match."""
    m = mask.unsqueeze(-1)
    best = cos.masked_fill(~m, -1.0).max(dim=1).values
    mean = (cos * m).sum(1) / m.sum(1).clamp(min=1)
    return torch.cat([best, mean], dim=-1)


# ---------------------------------------------------------------- executors
class LocalExecutor:
    """Chunks scored one after another in this process."""

    def __init__(self, scorer: ChunkScorer) -> None:
        self.scorer = scorer

    def prepare(self, queries: Iterable[str]) -> None:
        self.scorer.prepare(queries)

    def map(self, payloads: Iterable[tuple]) -> Iterator[np.ndarray]:
        for payload in payloads:
            yield self.scorer.score(*payload)

    def shutdown(self) -> None:
        pass


class RayExecutor:
    """Chunks scored by Ray actors (one CPU each, each with its own model and memory-mapped cache),
    at most ``2 × actors`` chunks in flight, results in submission order.

    Connects to ``address`` (``auto``, ``ray://host:port``; ``local`` starts a local Ray) unless
    Ray is already initialised (tests start ``ray.init(num_cpus=2)``). Actors read the model
    and cache directories by path: on a multi-machine cluster they must be on a shared file system."""

    def __init__(self, address: str, model_dir: str, cache_dir: str | None, threads: int = 1, score_batch: int = 2048,
                 actors: int = 0) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray-address needs Ray: pip install 'defectnas[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False,
                     include_dashboard=False)
        n = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1)(ChunkScorer)
        paths = (str(Path(model_dir).resolve()), str(Path(cache_dir).resolve()) if cache_dir else None)
        self.actors = [remote.remote(*paths, threads, score_batch) for _ in range(n)]

    def prepare(self, queries: Iterable[str]) -> None:
        pass  # each actor encodes (and keeps) the queries of the chunks it gets

    def map(self, payloads: Iterable[tuple]) -> Iterator[np.ndarray]:
        pending: deque = deque()
        turn = 0
        for payload in payloads:
            pending.append(self.actors[turn % len(self.actors)].score.remote(*payload))
            turn += 1
            if len(pending) >= 2 * len(self.actors):
                yield self.ray.get(pending.popleft())
        while pending:
            yield self.ray.get(pending.popleft())

    def shutdown(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
