"""``Scorer``: one query against many products, from the cache or from raw titles.

Why apart from the HTTP layer: this is the part whose numbers must equal
``DefectClassifier.predict_proba`` and whose cost is the latency budget, so it is testable and
benchmarkable without a server. A request costs one query encoding (a few tokens) and one
batched pass of the score head over the products' cached title encodings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import normalize_text
from .cache import AmbiguousProducts, ProductCache, UnknownProducts, model_hash  # noqa: F401 (re-exported)
from .encoding import encode_query, encode_titles, score


class Scorer:
    """Defect probabilities of (query, product) pairs with a loaded model and optional cache."""

    def __init__(self, clf, cache: ProductCache | None = None, name: str = "model", digest: str = "") -> None:
        clf.model_.eval()
        self.clf = clf
        self.cache = cache
        self.name = name  # shown in responses: "<model dir name>@<hash prefix>"
        self.model_hash = digest
        self.threshold = float(clf.threshold_)

    @classmethod
    def load(cls, model_dir: str | Path, cache_dir: str | Path | None = None, device: str = "cpu") -> "Scorer":
        """Load a model directory and (optionally) its cache; a cache of another model is refused."""
        from ..estimator import DefectClassifier

        digest = model_hash(model_dir)
        clf = DefectClassifier.load(model_dir, device=device)
        cache = None
        if cache_dir is not None:
            cache = ProductCache(cache_dir)
            cache.check_model(digest, model_dir)
        return cls(clf, cache, f"{Path(model_dir).resolve().name}@{digest.split(':')[-1][:12]}", digest)

    def score_ids(self, query: str, ids: list[str], locale: str | None = None) -> np.ndarray:
        """Probabilities (N,) of cached products (of ``locale``, for a cache keyed by locale);
        UnknownProducts if any id is not cached, AmbiguousProducts for a bare id several locales hold."""
        if self.cache is None:
            raise UnknownProducts(list(dict.fromkeys(ids)), locale)
        arrays = self.cache.take(ids, locale)
        return score(self.clf, encode_query(self.clf, normalize_text(query)), arrays)

    def text_problems(self, texts: list[str]) -> list[str]:
        """Per text: "" or why the model sees nothing in it (see DefectClassifier.text_problems)."""
        return self.clf.tokenizer_.problems([normalize_text(t) for t in texts])

    def score_titles(self, query: str, titles: list[str]) -> np.ndarray:
        """Probabilities (N,) of raw titles, encoded on the fly."""
        return score(self.clf, encode_query(self.clf, normalize_text(query)), encode_titles(self.clf, titles))
