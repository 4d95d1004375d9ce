"""Shared fixtures: a small learnable synthetic task, tiny model options, the shared samples.

The synthetic task: every query is "<modifier> <product word>" ("cordless drill"), every
product title is "<brand> <product word>". A title is relevant (label 0) when it names the
query's product and a defect (label 1, 25%) when it names another product. A two-tower model
learns this in a couple of epochs, so tests can check that training actually learns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

# Keep the suite light on a small shared machine, and deterministic.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]

WORDS = ["drill", "paint", "faucet", "hammer", "ladder", "lamp", "mower", "shovel", "toilet", "heater"]
MODIFIERS = ["cordless", "white", "outdoor", "small", "large", "black", "electric", "steel", "brass", "round"]
BRANDS = ["acme", "bolt", "crest", "delta", "evert", "forge"]

# The smallest model that still learns the synthetic task: use as DefectClassifier(**TINY).
TINY: dict = {
    "d_model": 16,
    "query_layers": [{}],
    "title_layers": [{}, {}],
    "embedding_init": "trained",
    "vocab_size": 200,
    "dense_hidden": 16,
    "perspectives": 2,
    "query_max_len": 6,
    "title_max_len": 8,
    "dropout": 0.0,
    "defect_weight": 3.0,
    "batch_size": 16,
    "lr": 3e-3,
    "epochs": 2,
    "patience": 100,
    "seed": 0,
}


def make_pairs(n_queries: int = 100, titles_per_query: int = 8, seed: int = 0) -> pd.DataFrame:
    """Columns query, title, label; a quarter of each query's titles are defects."""
    rng = np.random.default_rng(seed)
    n_defects = max(1, round(titles_per_query / 4))
    rows = []
    for i in range(n_queries):
        word = WORDS[i % len(WORDS)]
        query = f"{MODIFIERS[(i // len(WORDS)) % len(MODIFIERS)]} {word}"
        if i >= len(WORDS) * len(MODIFIERS):  # more queries than combinations: keep them distinct
            query += f" {i}"
        for j in range(titles_per_query):
            defect = j < n_defects
            other = WORDS[(WORDS.index(word) + 1 + int(rng.integers(len(WORDS) - 1))) % len(WORDS)]
            title = f"{BRANDS[int(rng.integers(len(BRANDS)))]} {other if defect else word}"
            rows.append((query, title, int(defect)))
    order = rng.permutation(len(rows))  # rows of a query need not be adjacent
    return pd.DataFrame([rows[k] for k in order], columns=["query", "title", "label"])


@pytest.fixture(scope="session")
def synthetic_pairs() -> pd.DataFrame:
    """100 queries × 8 titles (800 rows, 25% defects)."""
    return make_pairs(100, 8, seed=0)


@pytest.fixture(scope="session")
def synthetic_split(synthetic_pairs) -> dict[str, pd.DataFrame]:
    """The synthetic table split by query: train 70, valid 10, test 20 queries."""
    queries = sorted(synthetic_pairs["query"].unique())
    rng = np.random.default_rng(1)
    order = [queries[i] for i in rng.permutation(len(queries))]
    test, valid = set(order[:20]), set(order[20:30])
    q = synthetic_pairs["query"]
    return {
        "train": synthetic_pairs[~q.isin(test | valid)].reset_index(drop=True),
        "valid": synthetic_pairs[q.isin(valid)].reset_index(drop=True),
        "test": synthetic_pairs[q.isin(test)].reset_index(drop=True),
    }


@pytest.fixture
def tiny_options() -> dict:
    """A fresh copy of TINY (tests may change it)."""
    return json.loads(json.dumps(TINY))


@pytest.fixture(scope="session")
def tiny_config_path(tmp_path_factory) -> Path:
    """TINY (without the seed) as a flat --config JSON file, shared by the session."""
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps({k: v for k, v in TINY.items() if k != "seed"}), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def fitted(synthetic_split):
    """One tiny dl-gs classifier fitted on the synthetic train/valid split (shared, do not mutate)."""
    from defectnas import DefectClassifier

    return DefectClassifier(**{**TINY, "variant": "dl-gs", "epochs": 4}).fit(synthetic_split["train"], synthetic_split["valid"])


@pytest.fixture
def tiny_config_file(tmp_path) -> Path:
    """A --config JSON with the tiny model (nested {"model": ..., "train": ...} form)."""
    model_keys = {"d_model", "query_layers", "title_layers", "embedding_init", "dense_hidden", "perspectives",
                  "query_max_len", "title_max_len", "dropout"}  # each under its own section: a misplaced one is refused
    cfg = {
        "model": {k: v for k, v in TINY.items() if k in model_keys},
        "train": {k: v for k, v in TINY.items() if k not in model_keys and k != "seed"},
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def shared_data_dir() -> Path | None:
    """$DEFECTNAS_SHARED (or its data/), else <repo>/../shared/data — where the samples live."""
    candidates = []
    if os.environ.get("DEFECTNAS_SHARED"):
        root = Path(os.environ["DEFECTNAS_SHARED"])
        candidates += [root / "data", root]
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / "homedepot_sample.parquet").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def homedepot_sample() -> Path:
    """Path of the shared Home Depot sample (Kaggle layout); skips when it is not there."""
    found = shared_data_dir()
    if found is None:
        pytest.skip("shared Home Depot sample not found (set DEFECTNAS_SHARED)")
    return found / "homedepot_sample.parquet"
