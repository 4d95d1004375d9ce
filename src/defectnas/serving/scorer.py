"""``Scorer``: one query against many products, from the cache or from raw titles.

Why apart from the HTTP layer: this is the part whose numbers must equal
``DefectClassifier.predict_proba`` and whose cost is the latency budget, so it is testable and
benchmarkable without a server. A request costs one query encoding (a few tokens) and one
batched pass of the score head over the products' cached title encodings; a repeated query
costs no encoder pass when the scorer keeps a :class:`~.query_cache.QueryCache` (``query_cache``
entries). :func:`load_scorer` picks the runtime: this PyTorch scorer or the ONNX one
(:class:`~.onnx_backend.OnnxScorer`, same interface).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import normalize_text
from .cache import AmbiguousProducts, ProductCache, UnknownProducts, cache_rows_of, model_hash, served_name  # noqa: F401 (re-exported)
from .encoding import encode_queries, encode_query, encode_titles, score
from .query_cache import QueryCache

BACKENDS = ("torch", "onnx")


class Scorer:
    """Defect probabilities of (query, product) pairs with a loaded model and optional cache."""

    backend = "torch"
    batching_refused = ""  # micro-batching (.batching) is exact here: padding is masked

    def __init__(self, clf, cache: ProductCache | None = None, name: str = "model", digest: str = "", query_cache: int = 0,
                 model_dir: str | Path | None = None) -> None:
        clf.model_.eval()
        self.clf = clf
        self.model_dir = model_dir  # where the model was loaded from (accepts caches of the same encoder after a threshold change)
        self.cache = cache
        self.name = name  # shown in responses: "<model dir name>@<hash prefix>"
        self.model_hash = digest
        self.threshold = float(clf.threshold_)
        self.matching = bool(clf.model_config_.matching)
        self.query_cache = QueryCache(query_cache)  # normalised query → its encoding (0 entries: off)

    @classmethod
    def load(cls, model_dir: str | Path, cache_dir: str | Path | None = None, device: str = "cpu", query_cache: int = 0) -> "Scorer":
        """Load a model directory and (optionally) its cache; a cache of another model is refused."""
        from ..estimator import DefectClassifier

        digest = model_hash(model_dir)
        clf = DefectClassifier.load(model_dir, device=device)
        cache = None
        if cache_dir is not None:
            cache = ProductCache(cache_dir)
            cache.check_model(digest, model_dir)
        return cls(clf, cache, f"{served_name(model_dir)}@{digest.split(':')[-1][:12]}", digest, query_cache, model_dir)

    def open_cache(self, directory: str | Path) -> ProductCache:
        """The cache in ``directory``, opened; CacheError when it is unreadable or another model built it."""
        cache = ProductCache(directory)
        cache.check_model(self.model_hash, self.model_dir if self.model_dir is not None else "the model")
        return cache

    def encode_query(self, query: str):
        """The encoding of a normalised query (from the query cache when it was seen)."""
        return self.query_cache.get_or_compute(query, lambda q: encode_query(self.clf, q))

    def encode_queries(self, queries: list[str]) -> list:
        """Encodings of normalised queries: those in the query cache from it, the others in one padded pass."""
        return self.query_cache.get_or_compute_many(queries, lambda misses: encode_queries(self.clf, misses))

    def rows(self, ids: list[str], locale: str | None = None) -> np.ndarray:
        """Cache rows of ``ids`` (UnknownProducts / AmbiguousProducts as :meth:`score_ids`)."""
        return cache_rows_of(self.cache, ids, locale)

    def score_rows(self, query_encoding, cache: ProductCache, rows: np.ndarray) -> np.ndarray:
        """Probabilities (N,) of an encoded query against rows of ``cache``."""
        return score(self.clf, query_encoding, cache.take_rows(rows))

    def score_ids(self, query: str, ids: list[str], locale: str | None = None) -> np.ndarray:
        """Probabilities (N,) of cached products (of ``locale``, for a cache keyed by locale);
        UnknownProducts if any id is not cached, AmbiguousProducts for a bare id several locales hold."""
        rows = self.rows(ids, locale)  # unknown ids (or no cache) refused before the query is encoded
        arrays = self.cache.take_rows(rows)
        return score(self.clf, self.encode_query(normalize_text(query)), arrays)

    def text_problems(self, texts: list[str]) -> list[str]:
        """Per text: "" or why the model sees nothing in it (see DefectClassifier.text_problems)."""
        return self.clf.tokenizer_.problems([normalize_text(t) for t in texts])

    def score_titles(self, query: str, titles: list[str]) -> np.ndarray:
        """Probabilities (N,) of raw titles, encoded on the fly."""
        return score(self.clf, self.encode_query(normalize_text(query)), encode_titles(self.clf, titles))


def load_scorer(model_dir: str | Path, cache_dir: str | Path | None = None, *, backend: str = "torch", threads: int = 1,
                query_cache: int = 0, max_int8_ap_loss: float | None = None, allow_int8_loss: bool = False):
    """The service's scorer: ``torch`` runs a model directory with PyTorch, ``onnx`` an export
    directory (``defectnas export --format onnx``) on onnxruntime with ``threads`` threads; an
    int8 export whose saved AP loss is over ``max_int8_ap_loss`` is refused unless ``allow_int8_loss``."""
    from ..errors import ConfigError

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    from .onnx_export import is_export

    if backend == "torch":
        if is_export(model_dir) and not (Path(model_dir) / "config.json").is_file():
            raise ConfigError(f"{model_dir} is an ONNX export: serve it with --backend onnx")
        return Scorer.load(model_dir, cache_dir, query_cache=query_cache)
    if not is_export(model_dir):
        raise ConfigError(f"{model_dir}: --backend onnx needs an ONNX export directory; write one with "
                          f"defectnas export --model {model_dir} --format onnx --out EXPORT_DIR")
    from .onnx_backend import MAX_INT8_AP_LOSS, OnnxScorer

    bound = MAX_INT8_AP_LOSS if max_int8_ap_loss is None else max_int8_ap_loss
    return OnnxScorer.load(model_dir, cache_dir, threads=threads, query_cache=query_cache, max_ap_loss=bound, allow_ap_loss=allow_int8_loss)
