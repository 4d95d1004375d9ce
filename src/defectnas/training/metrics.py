"""Precision, recall and F1 of the defect class, the decision threshold, and calibration.

Why one module: every model in this project (ours and the baselines) is judged by the same
rule: the threshold that maximises F1 on the validation split is fixed, then applied to the
test split. Sharing the code keeps the comparison fair. The metrics dict also says how well
the probabilities are calibrated (ECE over 10 equal-width bins, Brier score), ranks them
(average precision) and how sure the precision/recall at the threshold are (95% Wilson score
intervals, treating pairs as independent — pairs of one query are not, so read them as a lower
bound on the uncertainty).
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 10  # equal-width probability bins of the expected calibration error


def best_threshold(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising the defect class's F1 on these labels."""
    labels = np.asarray(labels)
    if labels.sum() == 0:
        return 0.5, 0.0
    from sklearn.metrics import precision_recall_curve  # here, not at import: sklearn costs ~1.3 s to import, and scoring never needs it

    precision, recall, thresholds = precision_recall_curve(labels, probs)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    i = int(np.argmax(f1[:-1]))  # the last point (recall 0) has no threshold
    return float(thresholds[i]), float(f1[i])


def average_precision(labels: np.ndarray, probs: np.ndarray) -> float:
    """Average precision (area under the precision–recall curve, scikit-learn's step-wise sum) of
    the defect class: threshold-free, so it does not inherit the noise of a threshold picked on
    a few validation queries. 0 when there is no defect."""
    labels = np.asarray(labels).astype(int)
    if labels.sum() == 0:
        return 0.0
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, np.asarray(probs)))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: over ``bins`` equal-width bins of [0, 1] (the last one closed), the pair-weighted mean
    of |mean probability − defect rate| in each bin. 0 for no pairs."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return 0.0
    idx = np.minimum((probs * bins).astype(np.int64), bins - 1).clip(0)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, probs, bins) - np.bincount(idx, labels, bins))  # per bin: |Σp − Σy|
    return float(gap.sum() / count.sum())


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float | int]]:
    """Per equal-width bin: pairs, mean probability and defect rate (the reliability diagram's points)."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    idx = np.minimum((probs * bins).astype(np.int64), bins - 1).clip(0)
    count = np.bincount(idx, minlength=bins)
    sp, sy = np.bincount(idx, probs, bins), np.bincount(idx, labels, bins)
    return [{"low": i / bins, "high": (i + 1) / bins, "n": int(count[i]),
             "mean_probability": float(sp[i] / count[i]) if count[i] else float("nan"),
             "defect_rate": float(sy[i] / count[i]) if count[i] else float("nan")} for i in range(bins)]


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion; (0, 1) when there are no trials."""
    if trials == 0:
        return 0.0, 1.0
    phat = successes / trials
    denom = 1 + z * z / trials
    centre = (phat + z * z / (2 * trials)) / denom
    half = z * np.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def defect_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float, row_thresholds: np.ndarray | None = None) -> dict[str, float | int]:
    """The contract's metrics dict: precision/recall/F1 of the defect class at ``threshold`` (or at
    ``row_thresholds``, one per pair, for per-group operating points; ``threshold`` is then the
    global one), their 95% Wilson intervals, average precision, ECE and Brier score."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    preds = (probs >= (threshold if row_thresholds is None else np.asarray(row_thresholds))).astype(int)
    from sklearn.metrics import brier_score_loss, precision_recall_fscore_support
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average="binary", pos_label=1, zero_division=0)
    tp = int((preds & labels).sum())
    p_low, p_high = wilson_interval(tp, int(preds.sum()))
    r_low, r_high = wilson_interval(tp, int(labels.sum()))
    return {
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "threshold": float(threshold),
        "n": int(len(labels)),
        "defect_rate": float(labels.mean()) if len(labels) else 0.0,
        "average_precision": average_precision(labels, probs),
        "ece": expected_calibration_error(labels, probs),
        "brier": float(brier_score_loss(labels, np.clip(probs, 0.0, 1.0), pos_label=1)) if len(labels) else 0.0,
        "precision_low": p_low,
        "precision_high": p_high,
        "recall_low": r_low,
        "recall_high": r_high,
    }
