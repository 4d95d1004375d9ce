"""The statistics the search reports about its own noise.

Why a module: "the best architecture beats the default" is a claim about noisy numbers, and a
NAS tool that states it without an interval is reporting luck. These are small, standard
procedures with their sources:

- the paired bootstrap of "model a beats model b" lives one layer down, in
  :mod:`defectnas.training.significance`, because serving reports one too (an int8 export's AP loss).
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

import numpy as np

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
