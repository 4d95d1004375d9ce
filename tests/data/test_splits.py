import pandas as pd
import pytest

from defectnas.data import split_by_query


def _table(n_queries: int = 30) -> pd.DataFrame:
    queries = [f"Query {i}" if r == 0 else f"query  {i} " for i in range(n_queries) for r in range(3)]
    return pd.DataFrame({"query": queries, "title": [f"t{i}" for i in range(len(queries))], "label": [0, 1, 0] * n_queries})


def _keys(frame: pd.DataFrame) -> set[str]:
    return {" ".join(q.lower().split()) for q in frame["query"]}


def test_no_query_in_two_splits_and_all_rows_kept():
    parts = split_by_query(_table(), valid_frac=0.1, test_frac=0.2, seed=0)
    assert set(parts) == {"train", "valid", "test"}
    assert sum(len(p) for p in parts.values()) == 90
    train, valid, test = (_keys(parts[k]) for k in ("train", "valid", "test"))
    assert not (train & valid or train & test or valid & test)  # "Query 1" and "query  1 " count as one
    assert (len(test), len(valid)) == (6, 3)
    assert all((p["split"] == name).all() for name, p in parts.items())


def test_deterministic_for_a_seed():
    a, b = split_by_query(_table(), seed=3), split_by_query(_table(), seed=3)
    assert all(a[k].equals(b[k]) for k in a)
    c = split_by_query(_table(), seed=4)
    assert _keys(a["test"]) != _keys(c["test"])


def test_honours_a_full_split_column():
    table = _table(4).assign(split=["train"] * 6 + ["valid"] * 3 + ["test"] * 3)
    parts = split_by_query(table, seed=0)
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [6, 3, 3]


def test_train_test_column_gets_valid_carved_from_train():
    table = _table(20).assign(split=["train"] * 45 + ["test"] * 15)
    parts = split_by_query(table, valid_frac=0.2, seed=0)
    assert len(parts["test"]) == 15 and parts["test"].equals(split_by_query(table, valid_frac=0.2, seed=1)["test"])
    assert len(_keys(parts["valid"])) == 3  # 20% of the 15 train queries
    assert not _keys(parts["valid"]) & _keys(parts["train"])


def test_empty_split_is_an_error(raises_data_error):
    raises_data_error(split_by_query, _table(2), contains=("split would be empty", "2 distinct queries"))
    raises_data_error(split_by_query, _table(5), valid_frac=0.0, contains=("valid split would be empty",))
    raises_data_error(split_by_query, _table(5), valid_frac=0.6, test_frac=0.5, contains=("below 1",))


def test_read_splits_is_none_without_the_file_and_names_a_file_that_is_not_json(tmp_path):
    from defectnas.data import read_splits, write_splits
    from defectnas.errors import DataError

    assert read_splits(tmp_path) is None
    parts = {name: pd.DataFrame({"query": [f"{name} q"]}) for name in ("train", "valid", "test")}
    write_splits(tmp_path, parts, data="d.csv", layout={"query_col": "q"})
    assert read_splits(tmp_path) == {"data": "d.csv", "layout": {"query_col": "q"}, "train": ["train q"], "valid": ["valid q"],
                                     "test": ["test q"]}
    (tmp_path / "splits.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="splits.json: not readable as JSON"):
        read_splits(tmp_path)
