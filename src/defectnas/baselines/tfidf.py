"""The floor: logistic regression on TF-IDF features of the query, the title and their overlap.

Why: any learned model must beat the cheapest sensible one. The features are the query's and
the title's TF-IDF vectors (one vocabulary of words and word pairs) and their element-wise
product, which lights up exactly the words the two share. Same calibration (fitted on the
validation split, :mod:`defectnas.calibration`) and threshold rule as every model: its
class-balanced logistic regression otherwise reads ~0.5 for a typical pair in a set with 10%
defects, and compare's ECE/Brier columns would compare it unfairly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ._common import ThresholdedClassifier


class TfidfLogReg(ThresholdedClassifier):
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
        self.calibrate(valid, self.raw_proba(valid["query"], valid["title"]), seed=self.seed)
        return self

    def raw_proba(self, queries, titles) -> np.ndarray:
        """The logistic regression's probability (class-balanced, so not a rate), shape (n,)."""
        return self.model_.predict_proba(self._features(queries, titles))[:, 1]

    def predict_proba(self, queries, titles=None) -> np.ndarray:
        """Calibrated defect probability per pair, shape (n,)."""
        return self.calibrated(self.raw_proba(queries, titles))
