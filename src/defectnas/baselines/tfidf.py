"""The floor: logistic regression on TF-IDF features of the query, the title and their overlap.

Why: any learned model must beat the cheapest sensible one. The features are the query's and
the title's TF-IDF vectors (one vocabulary of words and word pairs) and their element-wise
product, which lights up exactly the words the two share. Same threshold rule as every model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ..training.metrics import best_threshold


class TfidfLogReg:
    """fit / predict_proba on (query, title, label) tables."""

    def __init__(self, C: float = 1.0, seed: int = 0) -> None:
        self.C = C
        self.seed = seed

    def _features(self, queries, titles):
        q = self.vectorizer_.transform(queries)
        t = self.vectorizer_.transform(titles)
        return sp.hstack([q, t, q.multiply(t)]).tocsr()

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame) -> "TfidfLogReg":
        self.vectorizer_ = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        self.vectorizer_.fit(pd.concat([train["query"], train["title"]]))
        self.model_ = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000, random_state=self.seed)
        self.model_.fit(self._features(train["query"], train["title"]), train["label"].to_numpy())
        self.threshold_, self.valid_f1_ = best_threshold(valid["label"].to_numpy(), self.predict_proba(valid["query"], valid["title"]))
        return self

    def predict_proba(self, queries, titles) -> np.ndarray:
        return self.model_.predict_proba(self._features(queries, titles))[:, 1]
