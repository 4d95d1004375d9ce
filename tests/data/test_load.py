"""load_pairs: output contract and every input error, as one line naming file and row/column."""

from pathlib import Path

import numpy as np
import pandas as pd

from defectnas.data import load_pairs

CF = {"query": ["a", "b", "b"], "product_title": ["x", "y", "z"], "median_relevance": [1, 4, 3]}


def test_output_columns_types_and_order():
    out = load_pairs(pd.DataFrame(CF, index=[10, 11, 12]))
    assert list(out.columns) == ["query", "title", "label", "product_id"]
    assert out["label"].dtype == np.int64 and out["label"].tolist() == [1, 0, 0]
    assert list(out.index) == [0, 1, 2]
    assert all(isinstance(v, str) for col in ("query", "title", "product_id") for v in out[col])



def test_keep_copies_source_columns_where_present():
    out = load_pairs(pd.DataFrame({**CF, "locale": ["us", "de", "us"]}), keep=["locale", "region"])
    assert out["locale"].tolist() == ["us", "de", "us"] and "region" not in out.columns

def test_dataframe_errors_name_the_caller_index(raises_data_error):
    frame = pd.DataFrame({**CF, "query": ["a", None, "  "]}, index=["r0", "r1", "r2"])
    raises_data_error(load_pairs, frame, contains=("<DataFrame>", "row index 'r1'", "empty query", "'query'", "and 1 more"))


def test_missing_column_suggests_the_closest_name(tmp_path: Path, raises_data_error):
    path = tmp_path / "t.csv"
    pd.DataFrame({"query": ["a"], "product_titel": ["x"], "median_relevance": [1]}).to_csv(path, index=False)
    raises_data_error(load_pairs, path, format="crowdflower",
                      contains=(str(path), "missing column 'product_title'", "did you mean 'product_titel'",
                                "columns present: query, product_titel, median_relevance"))


def test_empty_title_names_the_file_row(tmp_path: Path, raises_data_error):
    path = tmp_path / "t.csv"
    path.write_text("query,product_title,median_relevance\na,x,1\nb,,4\n")
    raises_data_error(load_pairs, path, contains=(str(path), "row 2", "empty title", "'product_title'"))


def test_unknown_format_and_missing_file(tmp_path: Path, raises_data_error):
    raises_data_error(load_pairs, tmp_path / "t.csv", format="amazon", contains=("unknown format 'amazon'", "esci", "table"))
    raises_data_error(load_pairs, tmp_path / "nope.parquet", contains=("nope.parquet", "not found"))
    raises_data_error(load_pairs, tmp_path, contains=(str(tmp_path), "directory"))


def test_empty_tables(tmp_path: Path, raises_data_error):
    raises_data_error(load_pairs, pd.DataFrame(columns=list(CF)), contains=("<DataFrame>", "no rows"))
    path = tmp_path / "t.csv"
    path.write_text("query,product_title,median_relevance\n")
    raises_data_error(load_pairs, path, contains=(str(path), "no rows"))


def test_undecodable_bytes(tmp_path: Path, raises_data_error):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"query": "caf\xe9", "product_title": "x", "median_relevance": 1}\n')
    raises_data_error(load_pairs, path, contains=(str(path), "UTF-8"))


def test_both_classes_required_unless_switched_off(raises_data_error):
    no_defects = pd.DataFrame({**CF, "median_relevance": [4, 3, 2]})
    raises_data_error(load_pairs, no_defects, contains=("<DataFrame>", "no defect pairs"))
    raises_data_error(load_pairs, pd.DataFrame({**CF, "median_relevance": [1, 1, 1]}), contains=("no relevant pairs",))
    assert load_pairs(no_defects, require_both_classes=False)["label"].sum() == 0
    assert load_pairs(no_defects, labels=False)["label"].sum() == 0


def test_unlabelled_input_for_predict(raises_data_error):
    frame = pd.DataFrame({"search_term": ["a"], "product_title": ["x"], "product_uid": [7]})
    out = load_pairs(frame, labels=False)
    assert list(out.columns) == ["query", "title", "product_id"] and out["product_id"].tolist() == ["7"]
    raises_data_error(load_pairs, frame, contains=("the homedepot layout", "without its label column 'relevance'"))  # labels required by default
    raises_data_error(load_pairs, frame, format="homedepot", contains=("missing column 'relevance'",))


def test_split_column_values(raises_data_error):
    frame = pd.DataFrame({**CF, "split": ["train", "Validation", "TEST"]})
    assert load_pairs(frame)["split"].tolist() == ["train", "valid", "test"]
    raises_data_error(load_pairs, frame.assign(split=["train", "holdout", "test"]),
                      contains=("row index 1", "split 'holdout'", "train, valid, test"))


def test_named_format_with_overrides():
    frame = pd.DataFrame({"q": ["a", "b"], "product_title": ["x", "y"], "median_relevance": [2, 4]})
    out = load_pairs(frame, format="crowdflower", query_col="q", defect_below=3)
    assert out["label"].tolist() == [1, 0]


def test_an_unrecognised_layout_names_the_flags_and_a_glued_header(raises_data_error, tmp_path):
    frame = pd.DataFrame({"query": ["a"], "name": ["x"]})
    message = raises_data_error(load_pairs, frame, labels=False, contains=("--query-col Q --title-col T", "query_col="))
    assert "--label-col" not in message  # predict needs no labels
    raises_data_error(load_pairs, frame, contains=("--label-col L",))
    path = tmp_path / "semicolons.csv"  # a .csv whose header has no comma but semicolons: read with them
    path.write_text("query;title;label\na;b;1\nc;d;0\n", encoding="utf-8")
    assert load_pairs(path)["title"].tolist() == ["b", "d"]
    path = tmp_path / "commas.tsv"  # a .tsv is read with tabs: a header of commas is one glued column
    path.write_text("query,title,label\na,b,1\nc,d,0\n", encoding="utf-8")
    raises_data_error(load_pairs, path, contains=("'query,title,label'", "separated by another character than its type"))
