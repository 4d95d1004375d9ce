"""(query, relevant title, defect title) triplets for ranking-style training.

Why: a triplet loss teaches the encoder that, for one query, the relevant product must score
closer than the irrelevant one. The defects shown for the *same* query are the best negatives
there are: the search engine found them plausible enough to show, so they are hard negatives
by construction. ``hard_negatives=False`` instead draws easy negatives, titles shown for other
queries, which also lets queries without any defect take part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError
from .text import normalize_series

COLUMNS = ["query", "positive", "negative"]


def build_triplets(df: pd.DataFrame, seed: int = 0, max_per_query: int | None = None, hard_negatives: bool = True) -> pd.DataFrame:
    """Columns ``query``, ``positive``, ``negative`` (titles) from a ``load_pairs`` table.

    Each relevant title (label 0) of a query is paired with one defect title (label 1) of the
    same query; defects are shuffled and used in turn, so all of them appear when there are at
    least as many relevant titles. Duplicate titles within a query count once. With
    ``max_per_query``, a query gives at most that many triplets (a seeded choice of its
    relevant titles). Queries are visited in sorted order and one seeded generator drives
    every choice, so the result depends only on the table and ``seed``.

    Raises DataError when the table lacks query/title/label or no triplet can be built.
    """
    missing = [c for c in ("query", "title", "label") if c not in df.columns]
    if missing:
        raise DataError(f"build_triplets needs columns {', '.join(missing)}; columns present: {', '.join(map(str, df.columns))}")
    if max_per_query is not None and max_per_query < 1:
        raise DataError(f"max_per_query must be at least 1, got {max_per_query}")
    rng = np.random.default_rng(seed)
    queries = normalize_series(df["query"]).tolist()
    titles = df["title"].astype(str).tolist()
    by_query: dict[str, tuple[set[str], set[str]]] = {}  # query -> (relevant titles, defect titles)
    for query, title, label in zip(queries, titles, df["label"].to_numpy()):
        by_query.setdefault(query, (set(), set()))[int(label == 1)].add(title)
    all_titles = np.array(sorted(set(titles)), dtype=object)

    rows: list[tuple[str, str, str]] = []
    for query in sorted(by_query):
        relevant, defects = by_query[query]
        if not relevant:
            continue
        positives = _shuffled(relevant, rng)
        if max_per_query is not None:
            positives = positives[:max_per_query]
        if hard_negatives:
            if not defects:
                continue
            shuffled = _shuffled(defects, rng)
            negatives = [shuffled[i % len(shuffled)] for i in range(len(positives))]
        else:
            negatives = _easy_negatives(relevant | defects, len(positives), all_titles, rng)
            if negatives is None:
                continue
        rows.extend((query, p, n) for p, n in zip(positives, negatives))

    if not rows:
        kind = "both a relevant and a defect product" if hard_negatives else "a relevant product and titles of other queries"
        raise DataError(f"no query has {kind}; cannot build triplets")
    return pd.DataFrame(rows, columns=COLUMNS)


def _shuffled(titles: set[str], rng: np.random.Generator) -> list[str]:
    """The titles in a seeded random order (sorted first, so set order never matters)."""
    ordered = sorted(titles)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def _easy_negatives(own: set[str], n: int, titles: np.ndarray, rng: np.random.Generator) -> list[str] | None:
    """``n`` titles drawn from those never shown for this query (None if there are none)."""
    if len(titles) <= len(own):
        return None
    picked: list[str] = []
    while len(picked) < n:  # rejection sampling: the query's own titles are a small share
        for title in titles[rng.integers(0, len(titles), size=2 * (n - len(picked)) + 4)]:
            if title not in own and len(picked) < n:
                picked.append(title)
    return picked
