"""Calibration: defect probabilities that can be read as rates.

Why: training weights defects ``defect_weight`` times (so that the model finds them), which
inflates every probability; the F1-best threshold hides that for ``is_defect``, but anyone who
reads ``defect_probability`` as "how likely is this a defect", or sets an operating point, needs
calibrated scores. After training, a monotone map from the model's score to a probability is
fitted on the validation split:

- ``isotonic``: scikit-learn's ``IsotonicRegression`` on the raw probability (a non-decreasing
  step-and-ramp function; applied as ``np.interp`` over its thresholds, which is what
  ``IsotonicRegression.predict`` does, clipped at both ends). Its flat steps would map
  neighbouring scores to one value — ties that lose ranking (on the CrowdFlower sample, AP fell
  from 0.367 to 0.320) — so ``TIE_BREAK`` (10⁻⁶) of the raw probability is blended in:
  ``(1 − ε)·iso(p) + ε·p`` is strictly increasing, keeps the raw ranking (and AP) exactly, and
  moves no probability by more than 10⁻⁶.
- ``sigmoid``: Platt scaling, ``p = 1 / (1 + exp(-(a·logit + b)))``, fitted by scikit-learn's
  ``LogisticRegression`` (no penalty) on Platt's smoothed targets; ``a > 0`` is required, so it
  is strictly increasing.
- ``auto`` (the default) picks the one with the lower Brier score, cross-validated inside the
  validation split (up to 5 folds, grouped by query and stratified by label), then refits it
  on the whole split — when the split has at least ``MIN_ISOTONIC_DEFECTS`` (100) defects;
  with fewer it takes the sigmoid outright: isotonic regression overfits small calibration sets
  (Niculescu-Mizil & Caruana, ICML 2005), and on a 409-pair ESCI validation split with 34
  defects it made seven steps, the top one at probability 1.0 for pairs that were defects half
  the time. Isotonic outputs are bounded by Platt's smoothed targets, ``1/(N₀+2)`` and
  ``(N₁+1)/(N₁+2)``, so no pair is ever scored a certain defect or certainly relevant.
- Whichever was chosen, a sigmoid whose fitted slope is not positive (the raw scores rank the
  validation defects below chance: a weak model, e.g. after one epoch) would invert the order,
  so isotonic regression is fitted instead; the report's ``selection`` says both steps.

The map is plain data saved as ``calibration.json`` beside ``config.json`` — method and
parameters, never a pickle — and every path that scores (``predict_proba``, ``predict``,
``evaluate``, the cache and the service) applies the same :meth:`Calibrator.transform_logits`.
A model directory without the file loads with the identity map (scores as before).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DataError

CALIBRATION_FILE = "calibration.json"
METHODS = ("auto", "isotonic", "sigmoid", "none")  # the `calibration` training option
THRESHOLD_RULE = "f1-best on validation (calibrated probabilities)"  # how fit picks the decision threshold, after calibrating
TIE_BREAK = 1e-6  # ε: share of the raw probability blended into the isotonic map (strictly increasing, no ties)
MIN_ISOTONIC_DEFECTS = 100  # auto: fewer validation defects than this → sigmoid without comparing
SELECTION = "lower Brier score, cross-validated within the validation split (folds grouped by query, stratified by label)"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The uncalibrated probability, float64 (as predict_proba always computed it)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


@dataclass
class Calibrator:
    """A fitted monotone map from a model's score to a calibrated defect probability."""

    method: str = "identity"  # "identity" (no calibration), "isotonic" or "sigmoid"
    x: list[float] = field(default_factory=list)  # isotonic: increasing thresholds on the raw probability
    y: list[float] = field(default_factory=list)  # isotonic: the calibrated probability at each threshold
    a: float = 1.0  # sigmoid: slope on the raw logit (> 0)
    b: float = 0.0  # sigmoid: intercept
    report: dict[str, Any] = field(default_factory=dict)  # how it was fitted and chosen (informational)

    def transform_logits(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64) from raw logits — the path of our own models."""
        z = np.asarray(logits, dtype=np.float64)
        if self.method == "sigmoid":
            return sigmoid(self.a * z + self.b)
        return self.transform(sigmoid(z))

    def transform(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64) from raw probabilities — the path of the baselines."""
        p = np.asarray(probs, dtype=np.float64)
        if self.method == "identity":
            return p
        if self.method == "isotonic":
            # np.interp clips outside [x[0], x[-1]], like out_of_bounds="clip"; ε·p breaks the steps' ties
            return (1.0 - TIE_BREAK) * np.interp(p, self.x, self.y) + TIE_BREAK * p
        q = np.clip(p, 1e-15, 1 - 1e-15)
        return sigmoid(self.a * (np.log(q) - np.log1p(-q)) + self.b)

    # -------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format_version": 1, "method": self.method}
        if self.method == "isotonic":
            d.update(x=self.x, y=self.y)
        elif self.method == "sigmoid":
            d.update(a=self.a, b=self.b)
        d["report"] = self.report
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = CALIBRATION_FILE) -> "Calibrator":
        method = d.get("method")
        try:
            if method == "isotonic":
                x, y = [float(v) for v in d["x"]], [float(v) for v in d["y"]]
                if len(x) != len(y) or not x or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                    raise ValueError("x and y must be non-decreasing arrays of one length")
                return cls("isotonic", x=x, y=y, report=d.get("report", {}))
            if method == "sigmoid":
                a, b = float(d["a"]), float(d["b"])
                if not a > 0:
                    raise ValueError(f"slope a must be positive, got {a}")
                return cls("sigmoid", a=a, b=b, report=d.get("report", {}))
            if method == "identity":
                return cls(report=d.get("report", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{source}: bad {method} calibration ({e})") from None
        raise DataError(f"{source}: unknown calibration method {method!r} (isotonic, sigmoid or identity)")

    def save(self, directory: str | Path) -> Path:
        from .storage import atomic_write_json

        path = Path(directory) / CALIBRATION_FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Calibrator":
        """The directory's calibration.json; the identity map when there is none (older models)."""
        path = Path(directory) / CALIBRATION_FILE
        if not path.exists():
            return cls(report={"note": f"no {CALIBRATION_FILE}: saved before calibration, scores are the raw model's"})
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg})") from None


# -------------------------------------------------------------------- fitting
def fit_calibrator(labels: np.ndarray, logits: np.ndarray, groups: Sequence | None = None, method: str = "auto",
                   seed: int = 0) -> Calibrator:
    """Fit ``method`` (or choose isotonic vs sigmoid with ``auto``) on validation labels and raw logits."""
    if method not in METHODS:
        raise DataError(f"calibration must be one of {', '.join(METHODS)}, got {method!r}")
    y = np.asarray(labels).astype(np.int64)
    z = np.asarray(logits, dtype=np.float64)
    report: dict[str, Any] = {"fitted_on": "validation split", "n": int(len(y)), "defects": int(y.sum())}
    if method == "none":
        return Calibrator(report={**report, "note": "calibration turned off"})
    if len(y) == 0 or y.min() == y.max():
        return Calibrator(report={**report, "note": "validation split has one class only: not calibrated"})
    if method == "auto" and int(y.sum()) < MIN_ISOTONIC_DEFECTS:
        report["selection"] = (f"{int(y.sum())} validation defects, fewer than {MIN_ISOTONIC_DEFECTS}: sigmoid (two parameters; "
                               f"isotonic regression overfits small calibration sets, Niculescu-Mizil & Caruana 2005)")
        method = "sigmoid"
    if method == "auto":
        scores, folds = _cross_validated_brier(y, z, groups, seed)
        report["folds"] = folds
        if scores:
            report["cv_brier"] = {k: round(v, 6) for k, v in scores.items()}
            report["selection"] = SELECTION
            method = min(scores, key=lambda k: (scores[k], k != "sigmoid"))  # a tie goes to the smooth, strictly increasing map
        else:
            report["selection"] = "too few validation queries or defects to cross-validate: sigmoid (two parameters)"
            method = "sigmoid"
    cal = _fit(method, y, z)
    if cal.method == "sigmoid" and not cal.a > 0:  # a score that ranks backwards on validation: keep the order, do not invert it
        slope, cal = cal.a, _fit("isotonic", y, z)
        chosen = report.get("selection", "sigmoid (the calibration option)")
        report["selection"] = (f"{chosen}; then isotonic instead: the sigmoid's fitted slope was {slope:.3g}, not positive (the "
                               "raw scores rank validation defects below chance), and it would invert their order; isotonic "
                               "regression keeps it")
    probs = cal.transform_logits(z)
    report.update(brier_before=round(_brier(y, sigmoid(z)), 6), brier_after=round(_brier(y, probs), 6))
    cal.report = report
    return cal


def _fit(method: str, y: np.ndarray, z: np.ndarray) -> Calibrator:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        # bounded by Platt's smoothed targets: no step says "certainly a defect" (1.0) or "certainly not" (0.0)
        pos, neg = int(y.sum()), int(len(y) - y.sum())
        iso = IsotonicRegression(y_min=1 / (neg + 2), y_max=(pos + 1) / (pos + 2), increasing=True, out_of_bounds="clip").fit(sigmoid(z), y)
        return Calibrator("isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
    from sklearn.linear_model import LogisticRegression

    # Platt's targets: 1 → (N+ + 1)/(N+ + 2), 0 → 1/(N- + 2) (no infinite slope on separable data),
    # as soft labels: each pair once as a defect with weight t and once as relevant with weight 1 - t.
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    t = np.where(y == 1, (pos + 1) / (pos + 2), 1 / (neg + 2))
    x = np.concatenate([z, z])[:, None]
    lr = LogisticRegression(C=np.inf).fit(x, np.r_[np.ones(len(z)), np.zeros(len(z))], sample_weight=np.r_[t, 1 - t])
    return Calibrator("sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def _cross_validated_brier(y: np.ndarray, z: np.ndarray, groups: Sequence | None, seed: int) -> tuple[dict[str, float], int]:
    """Out-of-fold Brier score of each method; ({}, k) when fewer than 2 folds are possible."""
    from sklearn.model_selection import StratifiedGroupKFold

    g = np.asarray(groups) if groups is not None else np.arange(len(y))
    k = min(5, len(np.unique(g)), int(y.sum()), int(len(y) - y.sum()))
    if k < 2:
        return {}, k
    oof = {m: np.zeros(len(y)) for m in ("isotonic", "sigmoid")}
    for train, test in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(z, y, g):
        for m in oof:
            oof[m][test] = _fit(m, y[train], z[train]).transform_logits(z[test])
    return {m: _brier(y, p) for m, p in oof.items()}, k


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(y, np.clip(p, 0.0, 1.0), pos_label=1))
