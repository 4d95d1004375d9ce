"""The statistics the search reports about its own noise.

Why a module: "the best architecture beats the default" is a claim about noisy numbers, and a
NAS tool that states it without an interval is reporting luck. These are small, standard
procedures with their sources:

- :func:`paired_bootstrap` — a paired bootstrap over test *queries* (the unit the splits are
  drawn in) of the difference in a metric between two models scored on the same rows, each
  model's score averaged over its seeds (Efron & Tibshirani 1993; for IR metrics, Sakai 2006).
- :func:`icc` — the intraclass correlation ICC(1) of a one-way random-effects ANOVA (Shrout &
  Fleiss 1979): the share of a reward's variance that is due to the architecture rather than the
  child's seed, with a bootstrap interval over architectures.
- :func:`icc_consistency` — ICC(3,1) / ICC(C,1) of the two-way (architecture × seed) table
  (Shrout & Fleiss 1979; McGraw & Wong 1996): the same share once the seeds' own effect is
  removed. This is the one that matters to a search with common random numbers, where every
  child trains under the same seeds: a seed that is lucky for every architecture shifts all
  rewards alike and does not change their order. (With shared seeds, ICC(1) counts that shared
  shift as noise and can even come out negative.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

FEW_QUERIES = 50  # a validation or test split of fewer queries gets a note: differences there are mostly noise


def average_precision_fast(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision exactly as scikit-learn's ``average_precision_score`` computes it (step-wise
    sum over distinct thresholds, ties grouped), without its per-call validation — which costs
    ~6 ms a call and dominates a bootstrap of a thousand resamples. A test pins the equality."""
    y = np.asarray(labels)
    positives = y.sum()
    if positives == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    s, y = np.asarray(scores)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def paired_bootstrap(labels: np.ndarray, groups: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                     metric: Callable[[np.ndarray, np.ndarray], float] = average_precision_fast, resamples: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """Difference ``metric(a) − metric(b)`` on the same rows, with a 95% interval and a one-sided p-value.

    ``probs_a`` / ``probs_b``: (seeds, rows) probabilities (or (rows,)); the metric is computed
    per seed and averaged, on each resample of whole queries (``groups``: one query id per row).
    Returns ``diff``, ``ci_low``, ``ci_high``, ``p_value`` (one-sided: share of resamples where a
    is not better), ``p_value_meaning`` (that sentence, for readers of the JSON), ``resamples`` and ``queries``.
    """
    labels = np.asarray(labels).astype(int)
    a, b = np.atleast_2d(probs_a), np.atleast_2d(probs_b)
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    rows_of = [np.flatnonzero(inverse == g) for g in range(len(codes))]

    def diff(idx: np.ndarray) -> float:
        y = labels[idx]
        return float(np.mean([metric(y, p[idx]) for p in a]) - np.mean([metric(y, p[idx]) for p in b]))

    observed = diff(np.arange(len(labels)))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        picked = rng.integers(0, len(rows_of), len(rows_of))
        draws.append(diff(np.concatenate([rows_of[g] for g in picked])))
    draws = np.asarray(draws)
    return {"diff": observed, "ci_low": float(np.quantile(draws, 0.025)), "ci_high": float(np.quantile(draws, 0.975)),
            "p_value": float((draws <= 0).mean()), "p_value_meaning": "one-sided: the share of query resamples where a is not better than b",
            "resamples": int(resamples), "queries": int(len(codes))}


def icc(scores: np.ndarray) -> float:
    """ICC(1) of a (architectures, seeds) table: between-architecture variance over total variance.

    One-way random effects: ``(MSB − MSW) / (MSB + (k − 1)·MSW)`` with k seeds per architecture;
    0 when the architecture explains nothing beyond seed noise (may come out slightly negative).
    """
    x = np.asarray(scores, dtype=float)
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError("icc needs at least 2 architectures and 2 seeds each")
    grand = x.mean()
    msb = k * ((x.mean(1) - grand) ** 2).sum() / (n - 1)
    msw = ((x - x.mean(1, keepdims=True)) ** 2).sum() / (n * (k - 1))
    return float((msb - msw) / (msb + (k - 1) * msw)) if msb + (k - 1) * msw > 0 else 0.0


def icc_consistency(scores: np.ndarray) -> float:
    """ICC(3,1) of a (architectures, seeds) table whose seeds are shared by every architecture:
    ``(MSR − MSE) / (MSR + (k − 1)·MSE)`` with MSE the residual after architecture and seed effects."""
    x = np.asarray(scores, dtype=float)
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError("icc_consistency needs at least 2 architectures and 2 seeds each")
    resid = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    msr = k * ((x.mean(1) - x.mean()) ** 2).sum() / (n - 1)
    mse = (resid ** 2).sum() / ((n - 1) * (k - 1))
    return float((msr - mse) / (msr + (k - 1) * mse)) if msr + (k - 1) * mse > 0 else 0.0


def icc_of_mean(single: float, k: int) -> float:
    """Spearman–Brown: the reliability of a K-seed mean from the single-seed ICC (ICC(1,k))."""
    return float(k * single / (1 + (k - 1) * single)) if single > -1 / max(k - 1, 1) else 0.0


def bootstrap_icc(scores: np.ndarray, k: int | None = None, resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """ICC of single seeds (and of a ``k``-seed mean) with 95% intervals from resampling architectures."""
    x = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(x), len(x)) for _ in range(resamples)]
    draws = [icc(x[p]) for p in picks]
    crn = [icc_consistency(x[p]) for p in picks]
    out = {"icc": icc(x), "ci_low": float(np.quantile(draws, 0.025)), "ci_high": float(np.quantile(draws, 0.975)),
           "icc_crn": icc_consistency(x), "crn_low": float(np.quantile(crn, 0.025)), "crn_high": float(np.quantile(crn, 0.975))}
    if k:
        out.update({"k": k, "icc_k": icc_of_mean(out["icc"], k), "icc_k_low": icc_of_mean(out["ci_low"], k),
                    "icc_k_high": icc_of_mean(out["ci_high"], k), "icc_crn_k": icc_of_mean(out["icc_crn"], k),
                    "crn_k_low": icc_of_mean(out["crn_low"], k), "crn_k_high": icc_of_mean(out["crn_high"], k)})
    return out
