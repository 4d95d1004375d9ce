"""Baselines that every defectnas model is compared against.

Each has ``fit`` / ``predict_proba`` / ``save`` / ``load``, a validation-chosen ``threshold_`` and
calibrated probabilities:

- ``TfidfLogReg``: logistic regression on TF-IDF features (the floor).
- ``lstm_classifier`` / ``coattention_classifier``: the two-tower DefectClassifier with BiLSTM
  encoders / a co-attention interaction.
- ``GBDTClassifier``: LightGBM on hand-made overlap, TF-IDF/BM25, number/unit and accessory features.
- ``CrossEncoderClassifier``: a fine-tuned BERT-family cross-encoder (all-MiniLM-L6-v2 by default).
- ``GridSearchClassifier``: ``dl-gs``, a grid over encoder depths, widths and heads.

``load_model(dir)`` reads any of their saved directories: the one loader of every command that
takes any saved model (``evaluate``, ``predict``, ``select``, ``train --teacher``). Heavy modules
(torch, LightGBM, transformers) are imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tfidf import TfidfLogReg

_LAZY = {
    "GBDTClassifier": ".gbdt", "CrossEncoderClassifier": ".bert", "GridSearchClassifier": ".grid",
    "lstm_classifier": ".neural", "coattention_classifier": ".neural", "PairFeatures": ".text_features",
}

__all__ = ["TfidfLogReg", "load_model", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(directory: str | Path, device: str = "cpu") -> Any:
    """Load any saved model directory: a cross-encoder, a GBDT, the TF-IDF floor, a grid search or a DefectClassifier."""
    from ._common import read_config

    d = Path(directory)
    kind = read_config(d).get("model_type")
    if kind == "cross-encoder":
        from .bert import CrossEncoderClassifier

        return CrossEncoderClassifier.load(d, device=device)
    if kind == "gbdt":
        from .gbdt import GBDTClassifier

        return GBDTClassifier.load(d)
    if kind == "tfidf":
        return TfidfLogReg.load(d)
    if (d / "grid.json").exists():
        from .grid import GridSearchClassifier

        return GridSearchClassifier.load(d, device=device)
    from ..estimator import DefectClassifier

    return DefectClassifier.load(d, device=device)
