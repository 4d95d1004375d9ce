"""Scoring many (query, title) pairs with a two-tower model: each distinct query and title encoded once.

Why: a two-tower model's towers are independent, so a table of 20 queries × 100 titles needs
20 query and 100 title encodings, not 2,000 of each — yet scoring pair by pair
(``forward(query_ids, title_ids)``) encodes both sides of every pair, and search tables repeat
queries and products heavily (Home Depot's validation split: 5,439 pairs of 826 queries).
:func:`pair_logits` factorises the token-id rows of both sides, encodes each distinct query and
title once (in batches of similar length, padding trimmed as
:func:`~defectnas.data.tokenizer.trim_padding` does: exact), and runs only the small score head
per pair. Logits equal ``forward``'s up to float rounding of batched kernels (~1e-6). The
trainer scores its validation split with it each epoch, ``predict_proba`` every table, and
:mod:`defectnas.batch` adds titles taken from a product cache.

Memory is bounded: distinct queries are held :data:`QUERY_BLOCK` at a time (their pairs are
scored before the next block is encoded) and titles ``batch_size`` at a time, so a table with more
than :data:`QUERY_BLOCK` distinct queries encodes a title once per block of queries it appears with.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .classifier import Encoded

QUERY_BLOCK = 8192  # distinct query encodings held at once (~5 KB each for train's default model)


def distinct_rows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes (N,), first (U,)): each row's index among the distinct rows of ``ids`` (N, L), the
    distinct rows ordered by token count (shortest first, so batches need little padding), and
    the position of one row of each."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(ids, axis=0, return_index=True, return_inverse=True)
    by_length = np.argsort((ids[first] != 0).sum(axis=1), kind="stable")  # distinct rows, shortest first
    rank = np.empty_like(by_length)
    rank[by_length] = np.arange(len(by_length))
    return rank[inverse.reshape(-1)], first[by_length]


@torch.no_grad()  # not inference_mode: during training the frozen-layer memo keeps what validation computes
def pair_logits(model, query_ids: np.ndarray, title_ids: np.ndarray, batch_size: int = 1024, device: str = "cpu",
                cache_rows: np.ndarray | None = None, cached_titles: Callable[[np.ndarray], Encoded] | None = None) -> np.ndarray:
    """Logits (N,) float32 of N pairs, in eval mode (the model's mode is restored), each distinct
    query and title encoded once.

    ``query_ids`` (N, Lq) and ``title_ids`` (N, Lt): right-padded token ids (0 = padding) as the
    model's tokenizer encodes them. With ``cache_rows`` (N,) int and ``cached_titles`` (sorted
    distinct rows → their title encodings on ``device``, e.g. from a product cache): pairs with
    ``cache_rows[i] >= 0`` take their title encoding from there instead of encoding
    ``title_ids[i]`` (their title ids are ignored).
    """
    n = len(query_ids)
    out = np.zeros(n, dtype=np.float32)
    if n == 0:
        return out
    was_training = model.training
    model.eval()
    try:
        from_cache = np.zeros(n, dtype=bool) if cache_rows is None or cached_titles is None else np.asarray(cache_rows) >= 0
        # title codes: distinct title-id rows to encode first, then distinct cache rows
        t_codes = np.empty(n, dtype=np.int64)
        enc_codes, enc_first = distinct_rows(title_ids[~from_cache])
        t_codes[~from_cache] = enc_codes
        cache_codes, cache_unique = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        if from_cache.any():
            cache_unique, cache_codes = np.unique(np.asarray(cache_rows)[from_cache], return_inverse=True)
            t_codes[from_cache] = len(enc_first) + cache_codes.reshape(-1)
        enc_titles = title_ids[np.flatnonzero(~from_cache)[enc_first]] if len(enc_first) else title_ids[:0]

        q_codes, q_first = distinct_rows(query_ids)
        order = np.argsort(q_codes, kind="stable")  # pairs by query
        bounds = np.searchsorted(q_codes[order], np.arange(0, len(q_first) + QUERY_BLOCK, QUERY_BLOCK))
        for b, start in enumerate(range(0, len(q_first), QUERY_BLOCK)):
            block = order[bounds[b] : bounds[b + 1]]  # pairs whose query is in this block ...
            block = block[np.argsort(t_codes[block], kind="stable")]  # ... sorted by title
            queries = encode_rows(model.encode_query, query_ids[q_first[start : start + QUERY_BLOCK]], batch_size, device)
            codes = t_codes[block]
            distinct = np.unique(codes)
            for i in range(0, len(distinct), batch_size):
                batch = distinct[i : i + batch_size]
                is_cached = batch >= len(enc_first)
                for part in (batch[~is_cached], batch[is_cached]):  # a batch is either encoded or taken from the cache
                    if not len(part):
                        continue
                    if part[0] < len(enc_first):
                        titles = encode_rows(model.encode_title, enc_titles[part], batch_size, device)
                    else:
                        titles = cached_titles(cache_unique[part - len(enc_first)])
                    lo, hi = np.searchsorted(codes, [part[0], part[-1] + 1])
                    pairs = block[lo:hi]
                    local = np.searchsorted(part, t_codes[pairs])  # each pair's title among `part`
                    for j in range(0, len(pairs), batch_size):
                        rows = pairs[j : j + batch_size]
                        q = take_rows(queries, torch.from_numpy(q_codes[rows] - start).to(device))
                        t = take_rows(titles, torch.from_numpy(local[j : j + batch_size]).to(device))
                        out[rows] = model.score(q, t).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def encode_rows(encode, ids: np.ndarray, batch_size: int, device: str) -> Encoded:
    """Encodings of U id rows in batches, padding trimmed per batch and re-padded to the longest:
    tokens (U, L, C), vector (U, V), mask (U, L). Rows ordered by length (as :func:`distinct_rows`
    orders them) need the least padding."""
    L = max(int((ids != 0).sum(axis=1).max()), 1)
    tokens = vector = mask = None
    for i in range(0, len(ids), batch_size):
        part = ids[i : i + batch_size]
        used = max(int((part != 0).any(axis=0).nonzero()[0].max(initial=0)) + 1, 1)  # as trim_padding: columns any row uses
        enc = encode(torch.from_numpy(np.ascontiguousarray(part[:, :used])).to(device))
        if vector is None:
            vector = torch.zeros(len(ids), enc.vector.shape[-1], dtype=enc.vector.dtype, device=device)
            if enc.tokens is not None:
                tokens = torch.zeros(len(ids), L, enc.tokens.shape[-1], dtype=enc.tokens.dtype, device=device)
                mask = torch.zeros(len(ids), L, dtype=torch.bool, device=device)
        vector[i : i + len(part)] = enc.vector
        if tokens is not None:
            width = enc.tokens.shape[1]
            tokens[i : i + len(part), :width] = enc.tokens
            mask[i : i + len(part), :width] = enc.mask
    return Encoded(tokens, vector, mask)


def take_rows(enc: Encoded, idx: torch.Tensor) -> Encoded:
    """Rows ``idx`` of an encoding, padding columns none of them uses dropped (exact: padding is masked)."""
    if enc.tokens is None:
        return Encoded(None, enc.vector[idx], None)
    mask = enc.mask[idx]
    used = mask.any(0).nonzero()
    width = int(used.max()) + 1 if len(used) else 1
    return Encoded(enc.tokens[idx, :width], enc.vector[idx], mask[:, :width])
