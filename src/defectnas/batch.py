"""Scoring a table of pairs with titles from a product cache where it holds them.

Why apart from :mod:`defectnas.model.pairs` (which encodes each distinct query and title once):
``predict --cache`` takes a pair's title encoding from the product cache when the cache holds
its product under the same normalised title, and reading a cache belongs to the serving layer,
which the model layer must not import. :func:`cache_rows` finds each pair's row;
:func:`pair_logits` scores with them.
"""

from __future__ import annotations

import numpy as np

from .model.classifier import Encoded
from .model.pairs import pair_logits as _pair_logits
from .serving.encoding import TitleArrays, title_encoded


def pair_logits(model, query_ids: np.ndarray, title_ids: np.ndarray, batch_size: int = 1024, device: str = "cpu",
                cached: TitleArrays | None = None, cache_rows: np.ndarray | None = None) -> np.ndarray:
    """Logits (N,) float32 of N pairs (:func:`defectnas.model.pairs.pair_logits`); with ``cached`` (a
    product cache's arrays) and ``cache_rows`` (N,) int, pairs with ``cache_rows[i] >= 0`` take their
    title encoding from that cache row (widened to float32) instead of encoding ``title_ids[i]``."""
    take = None if cached is None else (lambda rows: _from_cache(cached, rows, device, model.needs_title_tokens))
    return _pair_logits(model, query_ids, title_ids, batch_size, device, cache_rows=cache_rows, cached_titles=take)  # rows unused without a cache


def cache_rows(cache, product_ids, titles, locales=None) -> np.ndarray:
    """(N,) int64: each pair's row in ``cache`` (a :class:`~defectnas.serving.cache.ProductCache`)
    when the cache holds its product (by id, or by (locale, id) for a cache keyed by locale when
    ``locales`` are given) under the same normalised title, else -1 (the title is encoded).
    ``titles`` are normalised already (as ``predict_proba`` has them)."""
    from .serving.cache import product_key
    from .serving.catalog import title_hash

    by_key = cache.rows_by_key if (cache.locales is not None and locales is not None) else cache.index
    keys = (product_ids if by_key is cache.index else [product_key(str(i), str(loc)) for i, loc in zip(product_ids, locales)])
    out = np.full(len(titles), -1, dtype=np.int64)
    hashes: dict[str, str] = {}  # each distinct title hashed once
    for i, (key, title) in enumerate(zip(keys, titles)):
        row = by_key.get(str(key))
        if row is not None:
            digest = hashes.get(title) or hashes.setdefault(title, title_hash(title))
            if cache.title_hashes[row] == digest:
                out[i] = row
    return out


def _from_cache(cached: TitleArrays, rows: np.ndarray, device: str, needs_tokens: bool) -> Encoded:
    """Cached title encodings of ``rows`` (sorted cache rows), widened to float32."""
    from .serving.cache import take_encodings

    return title_encoded(take_encodings(cached, rows), device, needs_tokens)
