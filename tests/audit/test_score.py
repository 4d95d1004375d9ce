"""The scoring path: chunks are whole queries, scores are predict_proba's (the matrix-product matching it uses is the model's own: tests/model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from defectnas.audit.score import chunks


def test_chunks_keep_queries_whole_and_rows_in_order():
    batch = pd.DataFrame({"_query": ["a", "b", "a", "c", "c", "b", "d", "a"]})
    parts = chunks(batch, chunk_rows=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(8))
    for part in parts:
        queries = batch["_query"].to_numpy()[part]
        assert all(set(np.flatnonzero(batch["_query"].to_numpy() == q)) <= set(part) for q in set(queries))  # whole queries
    assert [p.tolist() for p in parts] == [[0, 2, 7], [1, 5], [3, 4, 6]]  # first appearance order; a chunk never splits a query


def test_chunks_score_as_predict_proba_and_each_query_passes_the_tower_once(audit_model, audit_cache, audit_pairs):
    """The fast path (query encodings kept across chunks and prepared per batch, pairs in
    title-length order, padding columns cut) gives predict_proba's probabilities, in the log's
    row order, also when the store of query encodings is too small to keep them all."""
    from defectnas import DefectClassifier
    from defectnas.audit.score import ChunkScorer, QueryEncodings

    rng = np.random.default_rng(0)
    rows = audit_pairs.sample(frac=1.0, random_state=0).reset_index(drop=True)
    pages = [rows.iloc[i : i + 7] for i in range(0, len(rows), 7)]  # queries spread over several pages each
    log = pd.concat([pages[i] for i in rng.permutation(len(pages))], ignore_index=True)
    products = log["product_id"].tolist()
    titles = [None] * len(log)
    for i in range(0, len(log), 5):  # every fifth product unknown to the cache but titled: encoded on the fly
        products[i], titles[i] = f"new{i}", log.loc[i, "title"]
    clf = DefectClassifier.load(audit_model)
    expected = clf.predict_proba(log["query"].tolist(), log["title"].tolist())
    for limit in (64 << 20, 1):  # everything kept; nothing kept beyond the chunk at hand
        scorer = ChunkScorer(str(audit_model), str(audit_cache), score_batch=8)
        scorer.queries = QueryEncodings(limit)
        scorer.prepare(log["query"].tolist()[: len(log) // 2])  # a batch's queries ahead of its chunks (all dropped again at limit 1)
        got = np.empty(len(log))
        for start in range(0, len(log), 40):  # chunks (a query appears in several)
            part = slice(start, start + 40)
            got[part] = scorer.score(log["query"].tolist()[part], products[part], titles[part])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        if limit > 1:
            assert scorer.queries.encoded == log["query"].nunique()  # each distinct query encoded once, across chunks
        else:
            assert scorer.queries.encoded > log["query"].nunique() and len(scorer.queries.store) <= 40


def test_text_cells_read_once_per_distinct_value_as_cell_by_cell():
    from defectnas.audit.log import _by_value, _logged, _query_key, _title_text

    for values in (pd.Series([" a ", "b", None, " a ", ""], dtype="str"), pd.Series([3, 1, 3], dtype="int64"),
                   pd.Series([1, None, 3], dtype="Int64"), pd.Series([1, 1.0, " x", None], dtype=object)):
        for text in (_query_key, _logged, _title_text):
            assert _by_value(values, text).tolist() == [text(v) for v in values.tolist()]


@pytest.mark.parametrize("with_matching,with_late", [(True, False), (False, False), (True, True), (False, True)])
def test_query_head_is_the_models_score(with_matching, with_late, fitted):
    """QueryHead (the query's blocks of the head computed once per query) gives model.score's
    logits, with and without the matching layer and the late interaction (random weights: the
    identity is algebra)."""
    import dataclasses

    import torch

    from defectnas.audit.score import QueryHead
    from defectnas.model import DefectNet
    from defectnas.model.classifier import Encoded

    torch.manual_seed(0)
    model = DefectNet(dataclasses.replace(fitted.model_config_, matching=with_matching, late_interaction=with_late)).eval()
    assert (model.matching is not None) == with_matching and (model.late is not None) == with_late
    gen = torch.Generator().manual_seed(0)
    q_ids = torch.randint(1, 200, (5, 6), generator=gen)
    q_ids[1, 3:] = 0  # shorter queries: padding the mask hides
    t_ids = torch.randint(1, 200, (40, 8), generator=gen)
    t_ids[::3, 5:] = 0
    qi = torch.randint(0, 5, (40,), generator=gen)
    with torch.inference_mode():
        qenc, t = model.encode_query(q_ids), model.encode_title(t_ids)
        head = QueryHead.of(model, qenc)
        assert head is not None
        got = head.score(qi, q_ids.shape[1], t)
        expected = model.score(Encoded(qenc.tokens[qi], qenc.vector[qi], qenc.mask[qi]), t)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_a_coattention_model_keeps_its_own_score(fitted):
    import dataclasses

    import torch

    from defectnas.audit.score import QueryHead
    from defectnas.model import DefectNet

    model = DefectNet(dataclasses.replace(fitted.model_config_, interaction="coattention")).eval()
    with torch.inference_mode():
        assert QueryHead.of(model, model.encode_query(torch.randint(1, 200, (2, 6)))) is None
