"""A tiny trained model (with the matching layer, so title token states are cached too), its
product cache, and result logs built from the synthetic task of tests/conftest.py, whose true
labels are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, make_pairs  # tests/conftest.py (tests/ is on sys.path: it is not a package)


@pytest.fixture(scope="session")
def audit_pairs() -> pd.DataFrame:
    """40 queries × 8 titles of the synthetic task, with product ids (unique per title)."""
    pairs = make_pairs(40, 8, seed=3)
    ids = {t: f"p{i}" for i, t in enumerate(sorted(pairs["title"].unique()))}
    return pairs.assign(product_id=pairs["title"].map(ids))


@pytest.fixture(scope="session")
def audit_model(synthetic_split, tmp_path_factory) -> Path:
    from defectnas import DefectClassifier

    out = tmp_path_factory.mktemp("audit_model")
    DefectClassifier(**{**TINY, "matching": True, "epochs": 3}).fit(synthetic_split["train"], synthetic_split["valid"]).save(out)
    return out


@pytest.fixture(scope="session")
def catalog_csv(audit_pairs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audit_catalog") / "products.csv"
    audit_pairs[["product_id", "title"]].drop_duplicates("product_id").to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def audit_cache(audit_model, catalog_csv, tmp_path_factory) -> Path:
    from defectnas.serving.cache import build_cache

    out = tmp_path_factory.mktemp("audit_cache") / "cache"
    build_cache(audit_model, catalog_csv, out, dtype="float32")  # exact, so the audit's scores can be held to predict_proba's
    return out


def result_log(pairs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One result page per query: its 8 products in a seeded random order (positions 1–8), an
    ``impressions`` count falling with position, a ``category`` per query and the true label."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (query, part) in enumerate(pairs.groupby("query", sort=True)):
        searches = int(rng.integers(5, 50))
        for pos, i in enumerate(rng.permutation(len(part)), start=1):
            r = part.iloc[i]
            rows.append({"query": query, "product_id": r["product_id"], "position": pos, "impressions": max(1, searches // pos),
                         "category": "tools" if k % 3 else "garden", "label": int(r["label"])})
    return pd.DataFrame(rows)


@pytest.fixture
def log_csv(audit_pairs, tmp_path) -> Path:
    path = tmp_path / "log.csv"
    result_log(audit_pairs).to_csv(path, index=False)
    return path
