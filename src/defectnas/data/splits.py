"""Train/valid/test splits grouped by query.

Why by query: pairs of the same query share words and often products, so a random row split
lets a model score well by remembering queries it has already seen. Every query (after
:func:`~defectnas.data.text.normalize_text`) lands in exactly one split, the assignment is a
seeded permutation of the sorted queries (same seed, same split, on any machine), and a split
shipped with the data (ESCI's ``split``) is kept — except that a (query, title) pair is never on
two sides: a pair the shipped split puts on several sides moves, all its rows, to the side of
its first row (one DataWarning line says how many).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..errors import DataError, DataWarning
from ._common import one_line
from .text import normalize_series

SPLITS = ("train", "valid", "test")
SPLITS_FILE = "splits.json"  # beside a saved model: which queries went to train / valid / test


def write_splits(directory, parts: dict[str, pd.DataFrame], **source) -> None:
    """``directory/splits.json``: the queries of each split (``parts``) and where they came from
    (``source``: data, seed, ...), so ``evaluate --split``, ``threshold`` and ``distill-query``
    use the model's own held-out queries. Written atomically."""
    from pathlib import Path

    from ..storage import atomic_write_json

    atomic_write_json(Path(directory) / SPLITS_FILE, {**source, **{name: sorted(set(parts[name]["query"])) for name in SPLITS}})


def read_splits(directory) -> dict | None:
    """The ``splits.json`` :func:`write_splits` left in ``directory``, or None when it has none;
    DataError naming the file when it is not JSON."""
    import json
    from pathlib import Path

    path = Path(directory) / SPLITS_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a JSON object")
    return record


def split_by_query(df: pd.DataFrame, valid_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``{"train": ..., "valid": ..., "test": ...}``, each with a fresh index and a ``split`` column.

    - Without a ``split`` column: ``test_frac`` and ``valid_frac`` of the distinct queries go
      to test and valid, the rest to train.
    - With one holding train/valid/test, it is used as it is. If it has train and test only
      (ESCI), ``valid_frac`` of the *train* queries are moved to valid.

    A fraction above 0 always gets at least one query; a split that would still be empty
    (too few queries, or a fraction of 0) raises DataError, except that ``test_frac=0`` asks
    for no test split (``fit`` holds out only a validation split) and gives an empty one.
    """
    for name, frac in (("valid_frac", valid_frac), ("test_frac", test_frac)):
        if not 0.0 <= frac < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {frac}")
    if valid_frac + test_frac >= 1.0:
        raise DataError(f"valid_frac + test_frac must be below 1, got {valid_frac + test_frac}")
    if "query" not in df.columns:
        raise DataError(f"split_by_query needs a 'query' column; columns present: {', '.join(map(str, df.columns))}")
    keys = normalize_series(df["query"]).fillna("")
    rng = np.random.default_rng(seed)

    if "split" in df.columns and df["split"].notna().all():
        assigned = df["split"].astype(str).to_numpy(dtype=object)
        unknown = sorted(set(assigned) - set(SPLITS))
        if unknown:
            raise DataError(f"split column has values {unknown}; expected train, valid or test")
        if "valid" not in set(assigned):
            train_queries = sorted(set(keys[assigned == "train"]))
            chosen = _take(train_queries, valid_frac, rng, "valid", "train")
            assigned = np.where((assigned == "train") & keys.isin(chosen).to_numpy(), "valid", assigned)
        if "title" in df.columns:
            assigned = _one_side_per_pair(keys, normalize_series(df["title"]).fillna(""), assigned)
    else:
        queries = sorted(set(keys))
        order = [queries[i] for i in rng.permutation(len(queries))]
        n_test = _count(len(order), test_frac)
        n_valid = _count(len(order), valid_frac)
        test, valid = set(order[:n_test]), set(order[n_test : n_test + n_valid])
        assigned = np.where(keys.isin(test), "test", np.where(keys.isin(valid), "valid", "train"))

    parts = {}
    for name in SPLITS:
        mask = assigned == name
        if not mask.any() and not (name == "test" and test_frac == 0):
            raise DataError(one_line(
                f"the {name} split would be empty ({keys.nunique()} distinct queries, "
                f"valid_frac={valid_frac}, test_frac={test_frac}); use more data or other fractions"
            ))
        part = df.loc[mask].copy()
        part["split"] = name
        parts[name] = part.reset_index(drop=True)
    return parts


def _one_side_per_pair(queries: pd.Series, titles: pd.Series, assigned: np.ndarray) -> np.ndarray:
    """``assigned`` with every (query, title) pair on the side of its first row."""
    pairs = (queries + "\x00" + titles).to_numpy()
    frame = pd.DataFrame({"pair": pairs, "side": assigned})
    first = frame.groupby("pair", sort=False)["side"].transform("first").to_numpy()
    moved = first != assigned
    if moved.any():
        n = frame.loc[moved, "pair"].nunique()
        warnings.warn(f"{n} pairs were in more than one split of the table's own split column; "
                      f"their {int(moved.sum())} rows moved to the split of each pair's first row", DataWarning, stacklevel=3)
    return first.astype(object)


def _count(n: int, frac: float) -> int:
    """How many of ``n`` queries a fraction gets: rounded, at least 1 when ``frac`` > 0."""
    return 0 if frac <= 0 else max(1, int(round(n * frac)))


def _take(queries: list[str], frac: float, rng: np.random.Generator, to: str, source: str) -> set[str]:
    """A seeded ``frac`` of ``queries``, leaving at least one behind."""
    n = _count(len(queries), frac)
    if n >= len(queries):
        raise DataError(f"cannot move {n} of {len(queries)} {source} queries to {to}; use more data or a smaller valid_frac")
    return {queries[i] for i in rng.permutation(len(queries))[:n]}
