"""The scoring path: chunks are whole queries (the matrix-product matching it uses is the model's own: tests/model)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from defectnas.audit.score import chunks


def test_chunks_keep_queries_whole_and_rows_in_order():
    batch = pd.DataFrame({"_query": ["a", "b", "a", "c", "c", "b", "d", "a"]})
    parts = chunks(batch, chunk_rows=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(8))
    for part in parts:
        queries = batch["_query"].to_numpy()[part]
        assert all(set(np.flatnonzero(batch["_query"].to_numpy() == q)) <= set(part) for q in set(queries))  # whole queries
    assert [p.tolist() for p in parts] == [[0, 2, 7], [1, 5], [3, 4, 6]]  # first appearance order; a chunk never splits a query
