import pandas as pd

from defectnas.data import build_triplets


def test_pairs_relevant_and_defect_of_the_same_query(pairs: pd.DataFrame):
    out = build_triplets(pairs, seed=0)
    assert list(out.columns) == ["query", "positive", "negative"]
    assert set(out["query"]) == {"q1", "q2"}  # the only queries with both classes
    label = {(q, t): l for q, t, l in zip(pairs["query"], pairs["title"], pairs["label"])}
    assert all(label[(q, p)] == 0 and label[(q, n)] == 1 for q, p, n in out.itertuples(index=False))
    q1 = out[out["query"] == "q1"]
    assert sorted(q1["positive"]) == ["a b c", "d e"]  # duplicate "d e" counted once
    assert set(q1["negative"]) == {"f", "g h i j"}  # defects used in turn
    assert build_triplets(pairs, seed=0).equals(out)


def test_max_per_query_caps(pairs: pd.DataFrame):
    out = build_triplets(pairs, seed=1, max_per_query=1)
    assert out.groupby("query").size().max() == 1 and len(out) == 2


def test_easy_negatives_come_from_other_queries(pairs: pd.DataFrame):
    out = build_triplets(pairs, seed=0, hard_negatives=False)
    assert set(out["query"]) == {"q1", "q2", "q3", "q4", "q5", "q6"}
    own = pairs.groupby("query")["title"].apply(set)
    assert all(n not in own[q] for q, _, n in out.itertuples(index=False))


def test_no_triplets_is_an_error(pairs: pd.DataFrame, raises_data_error):
    raises_data_error(build_triplets, pairs.assign(label=0), contains=("no query has both",))
