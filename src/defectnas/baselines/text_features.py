"""Hand-made features of a (query, title) pair, for the gradient-boosted-trees baseline.

Why hand-made: before deep models, relevance was judged by features like these, and a GBDT on
them is a strong, fast, explainable baseline. Each feature asks a question a rater would:
does the title contain the query's words (exactly, as word pairs, as character trigrams)? How
rare are the words it misses (IDF)? How well does it score under TF-IDF cosine and BM25? Do
the numbers and units agree ("12 in" vs "10 in")? Does the title name an accessory (case,
cover, charger…) of what the query asks for? Tokens come from scikit-learn's
``CountVectorizer`` analyzer; IDF statistics are fitted on the training titles and saved as
JSON (vocabulary) and safetensors (IDF array) — never pickled.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import normalize

from ..errors import DataError
from ..storage import atomic_write_json, load_tensors, save_tensors

TOKEN_PATTERN = r"(?u)\b\w[\w.]*\b"  # keeps "1.5" and "2x4" whole
ACCESSORIES = frozenset("""case cases cover covers charger chargers adapter adapters cable cables cord cords mount mounts
holder holders bag bags sleeve sleeves stand stands strap straps filter filters replacement refill refills kit kits
part parts accessory accessories bracket brackets blade blades battery batteries bulb bulbs lid lids skin skins
protector protectors screen decal decals hose hoses nozzle nozzles cartridge cartridges tray trays remote
""".split())
UNITS = {  # spelling → canonical unit
    "in": "in", "inch": "in", "inches": "in", '"': "in", "ft": "ft", "feet": "ft", "foot": "ft", "'": "ft",
    "gal": "gal", "gallon": "gal", "gallons": "gal", "oz": "oz", "lb": "lb", "lbs": "lb", "pound": "lb",
    "v": "v", "volt": "v", "volts": "v", "w": "w", "watt": "w", "watts": "w", "amp": "a", "amps": "a", "a": "a",
    "mm": "mm", "cm": "cm", "m": "m", "qt": "qt", "quart": "qt", "pack": "pk", "pk": "pk", "pc": "pc",
    "piece": "pc", "pieces": "pc", "btu": "btu", "gpm": "gpm", "psi": "psi", "sq": "sq", "cu": "cu",
    "gb": "gb", "tb": "tb", "mah": "mah", "hp": "hp", "ml": "ml", "l": "l", "k": "k",
}
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)\s*-?\s*(" + "|".join(sorted((re.escape(u) for u in UNITS), key=len, reverse=True)) + r")(?![a-z])")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

FEATURES = (
    "q_tokens", "t_tokens", "token_len_ratio", "char_len_ratio",
    "shared_tokens", "q_coverage", "t_coverage", "jaccard", "stem_coverage",
    "bigram_coverage", "char3_jaccard", "char3_q_coverage",
    "first_word_in_title", "last_word_in_title",
    "idf_coverage", "max_idf_missing", "tfidf_cosine", "bm25", "bm25_per_token",
    "q_numbers", "shared_numbers", "numbers_missing",
    "q_quantities", "shared_quantities", "quantity_conflict",
    "title_accessory", "query_accessory", "accessory_not_in_query",
)


def _stem(token: str) -> str:
    """A crude plural fold ("drills" → "drill", "boxes" → "box") — enough for coverage."""
    if len(token) > 4 and token.endswith("es") and token[-3] in "sxz":
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def _char_ngrams(text: str, n: int = 3) -> set[str]:
    s = f" {text} "
    return {s[i : i + n] for i in range(max(0, len(s) - n + 1))}


def _quantities(text: str) -> set[tuple[str, str]]:
    return {(str(float(num)), UNITS[unit]) for num, unit in _QUANTITY.findall(text)}


class PairFeatures:
    """``fit(titles)`` learns IDF over titles (BM25's documents); ``transform`` gives (N, F) float32."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b

    def fit(self, titles: Sequence[str]) -> "PairFeatures":
        docs = sorted(set(titles))
        counter = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True)
        counts = counter.fit_transform(docs)
        df = np.asarray((counts > 0).sum(0)).ravel()
        n = len(docs)
        self.vocabulary_ = {t: int(i) for t, i in counter.vocabulary_.items()}
        self.idf_ = np.log((1 + n) / (1 + df)) + 1.0  # scikit-learn's smoothed IDF
        self.bm25_idf_ = np.log(1 + (n - df + 0.5) / (df + 0.5))
        self.avgdl_ = float(np.asarray(counts.sum(1)).mean()) if n else 1.0
        self.n_docs_ = n
        self._build()
        return self

    def _build(self) -> None:
        self.counter_ = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True, vocabulary=self.vocabulary_)
        self.analyzer_ = self.counter_.build_analyzer()
        self.max_idf_ = float(math.log(1 + self.n_docs_) + 1.0)  # the IDF of an unseen word

    def idf(self, token: str) -> float:
        i = self.vocabulary_.get(token)
        return float(self.idf_[i]) if i is not None else self.max_idf_

    def transform(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        qc = self.counter_.transform(queries).tocsr().astype(np.float64)
        tc = self.counter_.transform(titles).tocsr().astype(np.float64)
        idf = sp.diags(self.idf_)
        cosine = np.asarray(normalize(qc @ idf).multiply(normalize(tc @ idf)).sum(1)).ravel()
        bm25 = self._bm25(qc, tc)
        rows = [self._pair(q, t) for q, t in zip(queries, titles)]
        out = np.array(rows, dtype=np.float64).reshape(len(rows), -1)
        names = [f for f in FEATURES if f not in ("tfidf_cosine", "bm25", "bm25_per_token")]
        full = np.zeros((len(rows), len(FEATURES)), dtype=np.float32)
        for j, name in enumerate(names):
            full[:, FEATURES.index(name)] = out[:, j]
        full[:, FEATURES.index("tfidf_cosine")] = cosine
        full[:, FEATURES.index("bm25")] = bm25
        full[:, FEATURES.index("bm25_per_token")] = bm25 / np.maximum(full[:, FEATURES.index("q_tokens")], 1)
        return full

    def _bm25(self, qc: sp.csr_matrix, tc: sp.csr_matrix) -> np.ndarray:
        """Okapi BM25 of each title (document) for its own query, row by row."""
        dl = np.asarray(tc.sum(1)).ravel()
        norm = self.k1 * (1 - self.b + self.b * dl / max(self.avgdl_, 1e-9))  # (N,)
        tf = (qc > 0).multiply(tc).tocsr()  # term frequency in the title of the query's terms
        tf.data = tf.data * (self.k1 + 1) / (tf.data + norm[np.repeat(np.arange(tf.shape[0]), np.diff(tf.indptr))])
        return np.asarray((tf @ sp.diags(self.bm25_idf_)).sum(1)).ravel()

    def _pair(self, query: str, title: str) -> list[float]:
        q_tokens, t_tokens = self.analyzer_(query), self.analyzer_(title)
        q, t = set(q_tokens), set(t_tokens)
        shared = q & t
        qs, ts = {_stem(x) for x in q}, {_stem(x) for x in t}
        q_bi = {(a, b) for a, b in zip(q_tokens, q_tokens[1:])}
        t_bi = {(a, b) for a, b in zip(t_tokens, t_tokens[1:])}
        qc3, tc3 = _char_ngrams(query), _char_ngrams(title)
        idfs = {x: self.idf(x) for x in q}
        missing_idf = [idfs[x] for x in q if _stem(x) not in ts]
        q_num, t_num = set(_NUMBER.findall(query)), set(_NUMBER.findall(title))
        q_qty, t_qty = _quantities(query), _quantities(title)
        t_units = {u for _, u in t_qty}
        conflict = any(u in t_units for _, u in q_qty - t_qty)  # same unit, another amount
        t_acc, q_acc = {_stem(x) for x in t & ACCESSORIES}, {_stem(x) for x in q & ACCESSORIES}
        nq, nt = max(len(q), 1), max(len(t), 1)
        return [
            len(q_tokens), len(t_tokens), len(q_tokens) / max(len(t_tokens), 1), len(query) / max(len(title), 1),
            len(shared), len(shared) / nq, len(shared) / nt, len(shared) / max(len(q | t), 1), len(qs & ts) / nq,
            len(q_bi & t_bi) / len(q_bi) if q_bi else -1.0,
            len(qc3 & tc3) / max(len(qc3 | tc3), 1), len(qc3 & tc3) / max(len(qc3), 1),
            float(bool(q_tokens) and _stem(q_tokens[0]) in ts), float(bool(q_tokens) and _stem(q_tokens[-1]) in ts),
            1.0 - sum(missing_idf) / max(sum(idfs.values()), 1e-9), max(missing_idf, default=0.0),
            len(q_num), len(q_num & t_num), float(bool(q_num) and not q_num & t_num),
            len(q_qty), len(q_qty & t_qty), float(conflict),
            float(bool(t_acc)), float(bool(q_acc)), float(bool(t_acc - q_acc)),
        ]

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        atomic_write_json(d / "features.json", {"features": list(FEATURES), "token_pattern": TOKEN_PATTERN, "k1": self.k1, "b": self.b,
                                                "avgdl": self.avgdl_, "n_docs": self.n_docs_, "vocabulary": self.vocabulary_})
        save_tensors(d / "features.safetensors", {"idf": torch.from_numpy(self.idf_), "bm25_idf": torch.from_numpy(self.bm25_idf_)})

    @classmethod
    def load(cls, directory: str | Path) -> "PairFeatures":
        d = Path(directory)
        meta = json.loads((d / "features.json").read_text(encoding="utf-8"))
        if meta["features"] != list(FEATURES):
            raise DataError(f"{d}: saved with another feature set; refit the model with this defectnas")
        tensors, _ = load_tensors(d / "features.safetensors")
        obj = cls(k1=meta["k1"], b=meta["b"])
        obj.vocabulary_, obj.avgdl_, obj.n_docs_ = meta["vocabulary"], meta["avgdl"], meta["n_docs"]
        obj.idf_, obj.bm25_idf_ = tensors["idf"].numpy(), tensors["bm25_idf"].numpy()
        obj._build()
        return obj
