"""What every baseline shares: the thresholded predict, the model-directory stamp and config check.

Why: the comparison calls every model the same way — ``predict_proba(table)`` or
``predict_proba(queries, titles)`` — on the same normalised text, and every saved baseline
says in ``config.json`` what it is and which library versions wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..calibration import CALIBRATION_FILE, THRESHOLD_RULE, Calibrator
from ..errors import DataError, NotFittedError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
LABELS = {"0": "relevant", "1": "defect"}


def stamp(model_type: str, **extra: Any) -> dict[str, Any]:
    """The common head of a baseline's config.json."""
    return {"format_version": FORMAT_VERSION, "library": "defectnas", "library_version": __version__,
            "model_type": model_type, "labels": LABELS, **extra}


def read_config(directory: str | Path, model_type: str | None = None) -> dict[str, Any]:
    """A model directory's config.json, checked for format version and (optionally) type."""
    path = Path(directory) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no folder, or a file given as one
        from ..storage import not_a_model_directory  # (storage imports torch; a TF-IDF model needs none)

        raise DataError(not_a_model_directory(directory)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg})") from None
    meta = config.get("defectnas", config)  # a Hugging Face config keeps ours under "defectnas"
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{directory}: saved by a newer defectnas (format {meta['format_version']}); upgrade defectnas")
    if model_type is not None and meta.get("model_type") != model_type:
        raise DataError(f"{directory}: a {meta.get('model_type', 'unknown')!r} model, not {model_type!r}")
    return meta


class ThresholdedClassifier:
    """``predict`` and ``evaluate`` for any baseline with ``predict_proba`` and a ``threshold_``,
    and the calibration they share with DefectClassifier (see :mod:`defectnas.calibration`).

    The class attributes are the operating point DefectClassifier carries, as a baseline has it:
    one global threshold chosen by :data:`~defectnas.calibration.THRESHOLD_RULE` (``threshold``
    and its per-group thresholds are for two-tower models), so ``evaluate`` and ``predict`` read
    every saved model alike."""

    threshold_rule_ = THRESHOLD_RULE
    operating_point_ = None
    group_thresholds_ = None

    def row_thresholds(self, table: pd.DataFrame, warn: bool = True) -> None:
        """None: no per-group thresholds, the global ``threshold_`` applies to every row."""
        return None

    def calibrate(self, valid: pd.DataFrame, raw: np.ndarray, seed: int = 0) -> None:
        """Fit the calibrator on the validation split's raw probabilities, then pick the
        F1-best threshold on the calibrated ones (``calibrator_``, ``threshold_``, ``valid_f1_``)."""
        from ..calibration import fit_calibrator
        from ..training.metrics import best_threshold

        labels = valid["label"].to_numpy()
        q = np.clip(np.asarray(raw, dtype=np.float64), 1e-15, 1 - 1e-15)
        self.calibrator_ = fit_calibrator(labels, np.log(q) - np.log1p(-q), valid["query"].to_numpy(), seed=seed)
        self.threshold_, self.valid_f1_ = best_threshold(labels, self.calibrator_.transform(raw))

    def decision_fields(self) -> dict[str, Any]:
        """What config.json records of the decision (every saved baseline alike): the threshold, its
        validation F1 and rule, and the calibration file beside it."""
        return {"threshold": self.threshold_, "valid_f1": self.valid_f1_, "threshold_rule": THRESHOLD_RULE,
                "calibration": {"file": CALIBRATION_FILE, "method": self.calibrator_.method}}

    def load_decision(self, directory: str | Path, config: dict[str, Any]) -> None:
        """``threshold_``, ``valid_f1_`` and ``calibrator_`` back from :meth:`decision_fields`' record
        and the calibration file (identity for a directory saved before calibration)."""
        self.threshold_, self.valid_f1_ = float(config["threshold"]), config.get("valid_f1")
        self.calibrator_ = Calibrator.load(directory)

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` through the fitted calibrator (unchanged before calibration, or for a model saved without one)."""
        cal = getattr(self, "calibrator_", None)
        return raw if cal is None else cal.transform(raw)

    def predict(self, queries, titles=None) -> np.ndarray:
        """1 (defect) where the probability reaches the validation-chosen threshold."""
        return (self.predict_proba(queries, titles) >= self.threshold_).astype(np.int64)

    def evaluate(self, data: pd.DataFrame | str | Path, return_probabilities: bool = False):
        """Precision, recall, F1 (defect class), AP, ECE, Brier, threshold, n, defect rate on labelled
        data; with ``return_probabilities``: ``(metrics, labels, probabilities)``, as DefectClassifier's."""
        return evaluate(self, data, return_probabilities)


def evaluate(model: Any, data: pd.DataFrame | str | Path, return_probabilities: bool = False):
    """The contract's metrics dict of a fitted baseline on labelled data, at its saved threshold."""
    from ..estimator import _as_pairs
    from ..training.metrics import defect_metrics

    df = _as_pairs(data)
    labels = df["label"].to_numpy()
    probs = np.asarray(model.predict_proba(df["query"].tolist(), df["title"].tolist()), dtype=np.float64)
    metrics = defect_metrics(labels, probs, model.threshold_)
    return (metrics, labels, probs) if return_probabilities else metrics


def check_fitted(model: Any, attribute: str) -> None:
    if not hasattr(model, attribute):
        raise NotFittedError(f"this {type(model).__name__} is not fitted yet: call fit() or {type(model).__name__}.load(dir)")
