"""The floor: logistic regression on TF-IDF features of the query, the title and their overlap.

Why: any learned model must beat the cheapest sensible one. The features are the query's and
the title's TF-IDF vectors (one vocabulary of words and word pairs) and their element-wise
product, which lights up exactly the words the two share. Same calibration (fitted on the
validation split, :mod:`defectnas.calibration`) and threshold rule as every model: its
class-balanced logistic regression otherwise reads ~0.5 for a typical pair in a set with 10%
defects, and compare's ECE/Brier columns would compare it unfairly.

Saved without pickle, like every model here: the vectorizer's settings and the fitted
vocabulary as JSON, its IDF weights and the regression's coefficients as safetensors, plus
``calibration.json`` and ``config.json`` — so ``compare --save-models`` keeps the floor too and
``evaluate``, ``predict`` and ``select`` read it back with :func:`defectnas.baselines.load_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ..data.text import text_pairs
from ._common import CONFIG_FILE, ThresholdedClassifier, check_fitted, read_config, stamp

VECTORIZER = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}  # words and word pairs seen twice, log term counts
VOCABULARY_FILE = "vocabulary.json"  # {term: column} of the fitted vectorizer
WEIGHTS_FILE = "tfidf.safetensors"  # idf (per term), coef (1, 3 × terms), intercept (1,)


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
        self.vectorizer_ = TfidfVectorizer(**VECTORIZER)
        self.vectorizer_.fit(pd.concat([train["query"], train["title"]]))
        self.model_ = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000, random_state=self.seed)
        self.model_.fit(self._features(train["query"], train["title"]), train["label"].to_numpy())
        self.calibrate(valid, self.raw_proba(valid["query"], valid["title"]), seed=self.seed)
        return self

    def raw_proba(self, queries, titles=None) -> np.ndarray:
        """The logistic regression's probability (class-balanced, so not a rate), shape (n,);
        two sequences, or one table with query and title columns (as every model here takes)."""
        check_fitted(self, "model_")
        queries, titles = text_pairs(queries, titles, "predict_proba")  # a bare string refused, as every model's
        return self.model_.predict_proba(self._features(queries, titles))[:, 1]

    def predict_proba(self, queries, titles=None) -> np.ndarray:
        """Calibrated defect probability per pair, shape (n,)."""
        return self.calibrated(self.raw_proba(queries, titles))

    def num_parameters(self) -> int:
        """One weight per feature (the intercept aside), as compare counts it."""
        check_fitted(self, "model_")
        return int(self.model_.coef_.size)

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """config.json + vocabulary.json + tfidf.safetensors (idf, coef, intercept) + calibration.json."""
        import sklearn
        import torch

        from ..storage import atomic_write_json, save_tensors

        check_fitted(self, "model_")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / VOCABULARY_FILE, {t: int(i) for t, i in self.vectorizer_.vocabulary_.items()})
        save_tensors(out / WEIGHTS_FILE, {"idf": torch.from_numpy(np.asarray(self.vectorizer_.idf_, dtype=np.float64)),
                                          "coef": torch.from_numpy(np.asarray(self.model_.coef_, dtype=np.float64)),
                                          "intercept": torch.from_numpy(np.asarray(self.model_.intercept_, dtype=np.float64))})
        self.calibrator_.save(out)
        atomic_write_json(out / CONFIG_FILE, stamp("tfidf", scikit_learn_version=sklearn.__version__, params={"C": self.C, "seed": self.seed},
                                                    vectorizer={**VECTORIZER, "ngram_range": list(VECTORIZER["ngram_range"])},
                                                    **self.decision_fields(), files={"vocabulary": VOCABULARY_FILE, "weights": WEIGHTS_FILE}))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "TfidfLogReg":
        """The fitted floor back from :meth:`save`'s files: the same probabilities, bit for bit."""
        from ..storage import load_tensors

        d = Path(directory)
        config = read_config(d, "tfidf")
        clf = cls(**config["params"])
        settings = {**config["vectorizer"], "ngram_range": tuple(config["vectorizer"]["ngram_range"])}
        vocabulary = json.loads((d / VOCABULARY_FILE).read_text(encoding="utf-8"))
        tensors, _ = load_tensors(d / WEIGHTS_FILE)
        clf.vectorizer_ = TfidfVectorizer(**settings, vocabulary=vocabulary)
        clf.vectorizer_.idf_ = tensors["idf"].numpy()
        clf.model_ = LogisticRegression(C=clf.C, class_weight="balanced", random_state=clf.seed)
        clf.model_.coef_, clf.model_.intercept_ = tensors["coef"].numpy(), tensors["intercept"].numpy()
        clf.model_.classes_, clf.model_.n_features_in_ = np.array([0, 1]), clf.model_.coef_.shape[1]
        clf.load_decision(d, config)
        return clf
