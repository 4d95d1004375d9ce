"""Precision, recall and F1 of the defect class, and the decision threshold.

Why one module: every model in this project (ours and the baselines) is judged by the same
rule: the threshold that maximises F1 on the validation split is fixed, then applied to the
test split. Sharing the code keeps the comparison fair.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support


def best_threshold(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising the defect class's F1 on these labels."""
    labels = np.asarray(labels)
    if labels.sum() == 0:
        return 0.5, 0.0
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
    return float(average_precision_score(labels, np.asarray(probs)))


def defect_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float | int]:
    """The contract's metrics dict: precision/recall/F1 of the defect class at ``threshold``."""
    labels = np.asarray(labels).astype(int)
    preds = (np.asarray(probs) >= threshold).astype(int)
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average="binary", pos_label=1, zero_division=0)
    return {
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "threshold": float(threshold),
        "n": int(len(labels)),
        "defect_rate": float(labels.mean()) if len(labels) else 0.0,
    }
