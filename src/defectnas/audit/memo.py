"""What one audit run has seen: the score of every distinct pair, and which rows repeat an earlier one.

Why a module of its own: two promises of the audit need a memory of earlier batches (and of the
other log, with ``--baseline-log``), and both must stay small:

- **the same pair scores the same.** The head's float rounding depends on which pairs share a
  batch (~1e-8), so a pair scored again in another batch — a query's page on another day, the
  same page in the baseline log — would differ in its last digits, and an unchanged page would
  show a change of 1e-10 instead of exactly 0. :class:`PairScores` keeps each distinct
  (normalised query, product, title) pair's probability, and the run scores a pair only the
  first time it is shown (which also saves the head's work on repeated pages).
- **a duplicated row is said.** :class:`RowRepeats` keeps a 64-bit hash of every distinct row
  to count the rows that repeat an earlier one.

Both keep sorted runs of numbers (:class:`SortedRuns`): 16 bytes per distinct pair and per
distinct row, not Python objects; strings are held once per distinct query and product.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class SortedRuns:
    """A growing map of int64 keys to float64 values, as sorted arrays merged like a log-structured
    tree (the newest run is merged into the one before it while it is at least half its size), so
    adding n keys costs O(n log n) in all and a look-up searches O(log n) runs."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(k) for k, _ in self.runs)

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, values) of ``keys``: values NaN where not found."""
        found = np.zeros(len(keys), dtype=bool)
        values = np.full(len(keys), np.nan)
        for k, v in self.runs:
            i = np.minimum(np.searchsorted(k, keys), len(k) - 1)
            hit = (k[i] == keys) & ~found
            values[hit] = v[i[hit]]
            found |= hit
        return found, values

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add keys not held yet (distinct)."""
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], np.asarray(values, dtype=np.float64)[order]))
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):
            (k2, v2), (k1, v1) = self.runs.pop(), self.runs.pop()
            k, v = np.concatenate([k1, k2]), np.concatenate([v1, v2])
            order = np.argsort(k, kind="stable")
            self.runs.append((k[order], v[order]))


class PairScores:
    """The probability of each distinct pair scored in this run, by (query key, product key, title).

    A pair's code is exact (no hash of the query or product): ``query id << 32 | item id``, where
    an item is a product key with the hash of its title (a product the cache lacks is scored by
    its title, and a log may give one id two titles; two titles of one id that hash alike are
    the only way two items could be confused)."""

    def __init__(self) -> None:
        self.queries: dict[str, int] = {}
        self.products: dict[str, int] = {}
        self.items: dict[tuple[int, int], int] = {}  # (product id, title hash or 0) → item id
        self.scores = SortedRuns()

    def codes(self, queries: pd.Series, products: pd.Series, titles: pd.Series) -> np.ndarray:
        """int64 code of each row's pair (queries: normalised; titles: None where the row has none)."""
        q = _ids(self.queries, queries)
        title_hash = np.zeros(len(titles), dtype=np.uint64)
        titled = titles.notna().to_numpy()
        if titled.any():
            title_hash[titled] = pd.util.hash_array(titles.to_numpy(dtype=object)[titled])
        pairs = pd.DataFrame({"p": _ids(self.products, products), "h": title_hash})
        groups = pairs.groupby(["p", "h"], sort=False).ngroup().to_numpy()  # numbered in order of first appearance
        firsts = pairs.drop_duplicates()  # (not .to_numpy(): int64 beside uint64 would become float64)
        ids = np.array([self.items.setdefault(key, len(self.items)) for key in zip(firsts["p"].tolist(), firsts["h"].tolist())],
                       dtype=np.int64)
        return (q << 32) | ids[groups]

    def get(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, probabilities) of pair codes (a missing product's probability is a found NaN)."""
        return self.scores.get(codes)

    def add(self, codes: np.ndarray, probs: np.ndarray) -> None:
        self.scores.add(codes, probs)


class RowRepeats:
    """Rows that repeat an earlier row of the log: how many, and the first few (1-based data rows)."""

    SHOWN = 5  # row numbers a warning names

    def __init__(self) -> None:
        self.seen = SortedRuns()
        self.count = 0
        self.first: list[int] = []

    def add(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        """Rows of one batch, each with the hash of its cells (int64)."""
        earlier, _ = self.seen.get(hashes)
        again = earlier | pd.Series(hashes).duplicated().to_numpy()
        if again.any():
            self.count += int(again.sum())
            self.first.extend(rows[again][: self.SHOWN - len(self.first)].tolist())
        self.seen.add(hashes[~again], np.zeros(int((~again).sum())))  # first showings: distinct, and new


def _ids(table: dict[str, int], values: pd.Series) -> np.ndarray:
    """int64 id of each value, new values numbered as they come (once per distinct value of the batch)."""
    codes, uniques = pd.factorize(values, sort=False)
    ids = np.array([table.setdefault(v, len(table)) for v in uniques.tolist()], dtype=np.int64)
    return ids[codes]
