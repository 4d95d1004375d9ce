"""The scoring path: matrix-product matching equals the model's module; chunks are whole queries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from defectnas.audit.score import chunks, matching_features
from defectnas.model.matching import MultiPerspectiveMatching


def test_matching_features_equal_the_module():
    torch.manual_seed(0)
    m = MultiPerspectiveMatching(16, perspectives=4)
    q_tokens, t_tokens = torch.randn(7, 5, 16), torch.randn(7, 9, 16)
    q_mask = torch.arange(5)[None] < torch.tensor([1, 2, 3, 4, 5, 5, 3])[:, None]
    t_mask = torch.arange(9)[None] < torch.tensor([9, 1, 4, 6, 2, 8, 9])[:, None]
    q_vec, t_vec = torch.randn(7, 16), torch.randn(7, 16)
    t_tokens[0, 3] = 0.0  # a zero vector: the eps clamp decides its cosine, as in F.cosine_similarity
    with torch.no_grad():
        expected = m(q_tokens, q_mask, q_vec, t_tokens, t_mask, t_vec)
        got = matching_features(m, q_tokens, q_mask, q_vec, t_tokens, t_mask, t_vec)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_chunks_keep_queries_whole_and_rows_in_order():
    batch = pd.DataFrame({"_query": ["a", "b", "a", "c", "c", "b", "d", "a"]})
    parts = chunks(batch, chunk_rows=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(8))
    for part in parts:
        queries = batch["_query"].to_numpy()[part]
        assert all(set(np.flatnonzero(batch["_query"].to_numpy() == q)) <= set(part) for q in set(queries))  # whole queries
    assert [p.tolist() for p in parts] == [[0, 2, 7], [1, 5], [3, 4, 6]]  # first appearance order; a chunk never splits a query
