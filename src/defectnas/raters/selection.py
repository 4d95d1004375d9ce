"""Choosing which pairs raters should judge next (uncertainty sampling, spread over queries).

Why: raters (or an LLM judge) cost money per pair, and most pairs teach the model nothing — it
is already sure of them. The labels that help most are those the model is least sure of
(uncertainty sampling, Lewis & Gale 1994; Settles, *Active Learning Literature Survey*, 2009)
and, when other models are at hand, those where models disagree (query by committee, Seung et
al. 1992). Two practical rules keep the batch useful: pairs the engine shows often matter more
(a label there moves the engine's real defect rate more), and one query must not eat the budget
(its pairs are alike, so their labels are redundant).

The score of a pair, all on calibrated defect probabilities ``p`` and the model's threshold ``t``:

- ``uncertainty = exp(−|logit(p) − logit(t)|)`` ∈ (0, 1]: 1 at the decision threshold, 0.37 one
  logit away. Measured in logits because calibrated probabilities crowd near 0 for a set with
  few defects, where a distance in probability would call every pair certain.
- ``disagreement = max_j |p − p_j|`` ∈ [0, 1] over the other models ``j`` (``--compare-with``:
  a cross-encoder, a GBDT, any saved model directory), when given.
- ``informativeness = max(uncertainty, disagreement)``; the reason column names which won.
- ``priority = informativeness × traffic / mean traffic`` when the table has a traffic column
  (``impressions``, ``count``, ``traffic``, ``clicks`` or ``--traffic-col``), else
  ``informativeness``: the expected change in the engine's observed defects per label.

Then greedily by priority (ties: table order): at most ``max_per_query`` pairs of one query,
never a pair already labelled (a non-empty label in the table, or a (query, title) pair of the
``labelled`` tables), never the same (query, title) twice, until ``budget`` pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import DataError

TRAFFIC_COLUMNS = ("impressions", "count", "traffic", "clicks")  # looked for, in this order, when --traffic-col is not given
EPS = 1e-6  # probabilities are clipped to [EPS, 1 − EPS] before taking logits


@dataclass
class Selection:
    """What :func:`select_pairs` chose: ``table`` (one row per chosen pair, best first) and counts."""

    table: pd.DataFrame
    candidates: int  # pairs that could be chosen (unlabelled, distinct)
    skipped_labelled: int  # pairs left out because they already have a label
    skipped_duplicates: int  # repeats of a (query, title) pair left out
    capped_queries: int  # queries that reached max_per_query


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def uncertainty(probs: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """``exp(−|logit(p) − logit(t)|)``, shape of ``probs``: 1 at the threshold, towards 0 far from it."""
    return np.exp(-np.abs(logit(probs) - logit(threshold)))


def find_traffic_column(columns: Sequence[str], given: str | None = None) -> str | None:
    """``given`` (DataError when the table lacks it), else the first of TRAFFIC_COLUMNS present, else None."""
    if given:
        if given not in columns:
            raise DataError(f"no column {given!r} for --traffic-col (columns: {', '.join(map(str, columns))})")
        return given
    return next((c for c in TRAFFIC_COLUMNS if c in columns), None)


def pair_keys(df: pd.DataFrame) -> pd.Series:
    """One key per (query, title) pair of normalised texts."""
    return df["query"].astype(str) + "\x1f" + df["title"].astype(str)


def select_pairs(pool: pd.DataFrame, probs: np.ndarray, threshold: float | np.ndarray, budget: int, *,
                 max_per_query: int = 3, other_probs: dict[str, np.ndarray] | None = None,
                 traffic_col: str | None = None, labelled: Sequence[pd.DataFrame] = ()) -> Selection:
    """Choose up to ``budget`` pairs of ``pool`` for raters (see the module docstring for the rule).

    - ``pool``: pairs with ``query`` and ``title`` (normalised, as ``load_pairs`` returns them);
      a ``label`` column with values marks pairs already labelled (skipped); other columns are
      kept in the output.
    - ``probs``: the model's calibrated defect probability per row of ``pool``, shape (n,);
      ``threshold``: its decision threshold (a float, or one per row for per-group thresholds).
    - ``other_probs``: name → calibrated probabilities of other models, shape (n,) each.
    - ``traffic_col``: a numeric column of ``pool`` (impressions or counts per pair or query).

    Returns a :class:`Selection` whose ``table`` has the pool's columns plus ``defect_probability``,
    ``is_defect``, ``uncertainty``, [``disagreement``,] ``priority``, ``reason`` and ``rank``
    (1 = chosen first). DataError when ``budget`` or ``max_per_query`` is below 1 or traffic is
    negative or not numeric.
    """
    if budget < 1 or max_per_query < 1:
        raise DataError(f"--budget and --max-per-query must be at least 1, got {budget} and {max_per_query}")
    n = len(pool)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n,):
        raise DataError(f"{len(probs)} probabilities for {n} pairs")
    table = pool.reset_index(drop=True).copy()
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n,))
    table["defect_probability"] = probs
    table["is_defect"] = probs >= thr
    table["uncertainty"] = uncertainty(probs, thr)
    informativeness = table["uncertainty"].to_numpy().copy()
    reason = np.array([f"uncertain: p {p:.3f} near the threshold {t:.3f}" for p, t in zip(probs, thr)], dtype=object)
    if other_probs:
        gaps = np.stack([np.abs(probs - np.asarray(v, dtype=np.float64)) for v in other_probs.values()])
        names = list(other_probs)
        table["disagreement"] = gaps.max(axis=0)
        who = gaps.argmax(axis=0)
        wins = table["disagreement"].to_numpy() > informativeness
        for i in np.flatnonzero(wins):
            reason[i] = f"disagreement: p {probs[i]:.3f} here, {other_probs[names[who[i]]][i]:.3f} from {names[who[i]]}"
        informativeness = np.maximum(informativeness, table["disagreement"].to_numpy())
    priority = informativeness
    if traffic_col:
        traffic = pd.to_numeric(table[traffic_col], errors="coerce")
        bad = traffic.isna() | (traffic < 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"column {traffic_col!r}, row {i + 1}: traffic must be a number ≥ 0, got {table[traffic_col].iloc[i]!r}")
        mean = float(traffic.mean()) or 1.0
        priority = informativeness * traffic.to_numpy(dtype=np.float64) / mean
        reason = np.array([f"{r}; traffic {t:g} ({t / mean:.2f}× the mean)" for r, t in zip(reason, traffic)], dtype=object)
    table["priority"] = priority
    table["reason"] = reason

    # what may be chosen: unlabelled, not in the labelled tables, first occurrence of a pair
    keys = pair_keys(table)
    has_label = table["label"].notna().to_numpy() if "label" in table else np.zeros(n, dtype=bool)
    known = set().union(*(set(pair_keys(t)) for t in labelled)) if labelled else set()
    in_labelled = keys.isin(known).to_numpy()
    duplicate = keys.duplicated().to_numpy()
    free = ~has_label & ~in_labelled & ~duplicate

    order = np.flatnonzero(free)[np.argsort(-priority[free], kind="stable")]
    per_query: dict[str, int] = {}
    chosen: list[int] = []
    for i in order:
        q = table.at[i, "query"]
        if per_query.get(q, 0) >= max_per_query:
            continue
        per_query[q] = per_query.get(q, 0) + 1
        chosen.append(int(i))
        if len(chosen) == budget:
            break
    out = table.iloc[chosen].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    if "label" in out and not out["label"].notna().any():
        out = out.drop(columns="label")
    return Selection(out, int(free.sum()), int((has_label | in_labelled).sum()), int((duplicate & ~has_label & ~in_labelled).sum()),
                     sum(v >= max_per_query for v in per_query.values()))


def quepid_table(selection: pd.DataFrame, docid: str = "product_id") -> pd.DataFrame:
    """Quepid's rating import layout, ``query,docid,rating`` (rating left empty for raters).

    ``docid`` names the column that identifies a document in the user's search engine (the
    product id by default; ``title`` when the engine has no ids).
    """
    if docid not in selection:
        raise DataError(f"no column {docid!r} to use as Quepid's docid")
    return pd.DataFrame({"query": selection["query"], "docid": selection[docid].astype(str), "rating": ""})
