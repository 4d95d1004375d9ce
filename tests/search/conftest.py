"""Fixtures of the search tests: tiny data, tiny child models, and a fake child for fast loop tests.

The fake child replaces training with a deterministic function of the architecture, so the
search loop (sampling, logging, caching, checkpoints, resume, top-k) can be tested in well under
a second per search; the real children are exercised by the end-to-end tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .fakes import fake_evaluate_child, fake_time_models

# A child that trains in about a second: MiniLM's fixed vocabulary (deterministic, unlike a
# freshly trained WordPiece), 16 wide, short sequences, one query layer.
TINY_CHILD = {
    "d_model": 16,
    "query_layers": [{}],
    "embedding_init": "minilm",
    "backbone_layers": 0,  # the word-embedding model keeps search tests fast; pre-trained layers are tested in tests/model
    "query_backbone_layers": 0,
    "dense_hidden": 16,
    "perspectives": 2,
    "query_max_len": 8,
    "title_max_len": 16,
    "batch_size": 64,
    "lr": 1e-2,
}


@pytest.fixture(scope="session")
def tiny_child_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("search-config") / "tiny.json"
    path.write_text(json.dumps(TINY_CHILD), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def search_sample(tmp_path_factory, homedepot_sample) -> Path:
    """About 700 rows (120 whole queries) of the shared Home Depot sample, in its own layout."""
    df = pd.read_parquet(homedepot_sample)
    queries = sorted(df["search_term"].unique())
    picked = set(np.random.default_rng(0).choice(queries, 120, replace=False))
    path = tmp_path_factory.mktemp("search-data") / "homedepot_small.parquet"
    df[df["search_term"].isin(picked)].to_parquet(path, index=False)
    return path


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory, synthetic_pairs) -> Path:
    path = tmp_path_factory.mktemp("search-synthetic") / "pairs.csv"
    synthetic_pairs.to_csv(path, index=False)
    return path


@pytest.fixture
def fake_timing(monkeypatch):
    """The end of a search times its saved models side by side; fake children's models cannot be served."""
    import defectnas.search.final as final

    monkeypatch.setattr(final, "time_models", fake_time_models)
    monkeypatch.setattr(final, "timing_estimate_s", lambda cfg, latencies_ms: 0.0)  # and faked timing takes no time


@pytest.fixture
def fake_children(monkeypatch, fake_timing):
    """Serial searches in this process use the fake child; returns the list of jobs it ran."""
    import defectnas.search.executors as executors

    ran: list[dict] = []

    def fake(job, train=None, valid=None, test=None):
        ran.append(job)
        return fake_evaluate_child(job, train, valid, test)

    monkeypatch.setattr(executors, "evaluate_child", fake)
    return ran


def read_trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "trials.jsonl").read_text(encoding="utf-8").splitlines()]
