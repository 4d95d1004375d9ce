"""Choosing pairs for raters: the uncertainty score, spread and skip rules, traffic, disagreement,
the Quepid layout, and the round trip of a rated file back into training data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from defectnas.cli import main
from defectnas.data import load_pairs
from defectnas.errors import DataError
from defectnas.raters.selection import quepid_table, select_pairs, uncertainty


def pool(n_queries: int = 4, per_query: int = 5) -> pd.DataFrame:
    rows = [(f"query {q}", f"title {q}-{j}", f"id{q}{j}") for q in range(n_queries) for j in range(per_query)]
    return pd.DataFrame(rows, columns=["query", "title", "product_id"])


def test_uncertainty_peaks_at_the_threshold_and_is_symmetric_in_logits():
    u = uncertainty(np.array([0.2, 0.5, 0.8, 0.999]), 0.5)
    assert u[1] == pytest.approx(1.0) and u[0] == pytest.approx(u[2]) and u[0] == pytest.approx(np.exp(-np.log(4)))
    assert u[3] < u[0]
    # a low threshold: 0.05 next to 0.1 is more uncertain than 0.4 (in logits, not in probability)
    low = uncertainty(np.array([0.05, 0.4]), 0.1)
    assert low[0] > low[1]


def test_most_uncertain_first_at_most_m_per_query():
    df = pool(3, 5)
    probs = np.full(len(df), 0.01)
    probs[:5] = [0.50, 0.49, 0.48, 0.47, 0.46]  # query 0 holds the five most uncertain pairs
    probs[5] = 0.30
    sel = select_pairs(df, probs, 0.5, budget=4, max_per_query=2)
    t = sel.table
    assert list(t["rank"]) == [1, 2, 3, 4]
    assert list(t["title"][:2]) == ["title 0-0", "title 0-1"]  # the best two of query 0, then the cap
    assert (t["query"] == "query 0").sum() == 2 and t["title"].iloc[2] == "title 1-0"
    assert t["priority"].is_monotonic_decreasing
    assert sel.capped_queries >= 1 and t["reason"].str.startswith("uncertain").all()


def test_skips_labelled_and_repeated_pairs():
    df = pool(2, 4)
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)  # a repeated pair
    df["label"] = [np.nan] * len(df)
    df.loc[1, "label"] = 1  # already labelled in the table
    probs = np.full(len(df), 0.5)
    labelled = [df.iloc[[2]][["query", "title"]]]  # labelled elsewhere
    sel = select_pairs(df, probs, 0.5, budget=100, max_per_query=100, labelled=labelled)
    chosen = set(sel.table["title"])
    assert "title 0-1" not in chosen and "title 0-2" not in chosen
    assert len(sel.table) == len(chosen) == 6  # 8 distinct pairs − 2 labelled; the repeat once
    assert (sel.skipped_labelled, sel.skipped_duplicates, sel.candidates) == (2, 1, 6)
    assert "label" not in sel.table  # an all-empty label column is not carried into the output


def test_traffic_weights_the_priority():
    df = pool(2, 1)
    df["impressions"] = [1, 99]
    probs = np.array([0.5, 0.2])  # the first is more uncertain, the second shown 99× as often
    sel = select_pairs(df, probs, 0.5, budget=1, traffic_col="impressions")
    assert sel.table["title"].iloc[0] == "title 1-0" and "traffic 99" in sel.table["reason"].iloc[0]
    df["impressions"] = [1, -3]
    with pytest.raises(DataError, match="row 2"):
        select_pairs(df, probs, 0.5, budget=1, traffic_col="impressions")


def test_disagreement_with_another_model_is_informative():
    df = pool(1, 3)
    probs = np.array([0.01, 0.02, 0.3])
    other = {"gbdt": np.array([0.9, 0.02, 0.3])}  # the GBDT disputes the first pair
    sel = select_pairs(df, probs, 0.5, budget=1, other_probs=other)
    assert sel.table["title"].iloc[0] == "title 0-0"
    assert sel.table["disagreement"].iloc[0] == pytest.approx(0.89) and "gbdt" in sel.table["reason"].iloc[0]


def test_quepid_layout():
    sel = select_pairs(pool(1, 2), np.array([0.5, 0.4]), 0.5, budget=2).table
    q = quepid_table(sel)
    assert list(q.columns) == ["query", "docid", "rating"] and list(q["docid"]) == ["id00", "id01"] and (q["rating"] == "").all()
    assert list(quepid_table(sel, "title")["docid"]) == ["title 0-0", "title 0-1"]


def test_select_cli_and_rated_round_trip(tmp_path, fitted, synthetic_split, capsys):
    model = tmp_path / "model"
    fitted.save(model)
    unlabelled = synthetic_split["test"].drop(columns="label").assign(impressions=1)
    unlabelled.insert(0, "id", [f"{i:05d}" for i in range(len(unlabelled))])  # the user's own key, leading zeros
    unlabelled["product_id"] = [f"SKU-{i}" for i in range(len(unlabelled))]
    unlabelled["query"] = unlabelled["query"].str.upper()  # as the engine logged it
    unlabelled.to_csv(tmp_path / "pool.csv", index=False)
    already = synthetic_split["test"].iloc[:5]
    already.to_csv(tmp_path / "labelled.csv", index=False)
    out = tmp_path / "to_rate.csv"
    assert main(["select", "--model", str(model), "--data", str(tmp_path / "pool.csv"), "--query-col", "query", "--title-col", "title",
                 "--budget", "12", "--max-per-query", "2", "--labelled", str(tmp_path / "labelled.csv"), "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    chosen = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert len(chosen) == summary["chosen"] == 12 and summary["traffic_column"] == "impressions"
    # the user's rows as given: every column, original values, then what select adds
    assert list(chosen.columns[:5]) == list(unlabelled.columns)
    original = unlabelled.set_index("id")
    for _, row in chosen.iterrows():
        assert row["query"] == original.loc[row["id"], "query"] and row["product_id"] == original.loc[row["id"], "product_id"]
    chosen["query"] = chosen["query"].str.lower()
    assert chosen.groupby("query").size().max() <= 2
    assert not set(zip(chosen["query"], chosen["title"])) & set(zip(already["query"], already["title"]))
    assert {"rank", "defect_probability", "uncertainty", "priority", "reason", "rating"} <= set(chosen.columns)

    # raters fill the rating column; the file goes back in as training data with the usual mapping
    truth = synthetic_split["test"].set_index(["query", "title"])["label"]
    chosen["rating"] = ["defect" if truth[(q, t)].max() == 1 else "relevant" for q, t in zip(chosen["query"], chosen["title"])]
    chosen.to_csv(tmp_path / "rated.csv", index=False)
    back = load_pairs(tmp_path / "rated.csv", format="table", query_col="query", title_col="title", label_col="rating",
                      defect_labels="defect", require_both_classes=False)
    assert len(back) == 12
    assert list(back["label"]) == [int(truth[(q, t)].max()) for q, t in zip(chosen["query"], chosen["title"])]

    quepid = tmp_path / "quepid.csv"
    assert main(["select", "--model", str(model), "--data", str(tmp_path / "pool.csv"), "--query-col", "query", "--title-col", "title",
                 "--budget", "5", "--format", "quepid", "--docid", "title", "--out", str(quepid), "--quiet"]) == 0
    q = pd.read_csv(quepid, keep_default_na=False)
    assert list(q.columns) == ["query", "docid", "rating"] and len(q) == 5
    assert (tmp_path / "quepid.details.csv").exists()
    assert main(["select", "--model", str(model), "--data", str(tmp_path / "pool.csv"), "--query-col", "query", "--title-col", "title",
                 "--budget", "5", "--format", "quepid", "--out", str(quepid), "--quiet"]) == 0
    q = pd.read_csv(quepid, keep_default_na=False)  # docid: the table's product_id; the query as the engine logged it
    assert q["docid"].str.startswith("SKU-").all() and q["query"].isin(unlabelled["query"]).all()


def test_rows_of_the_table_that_carry_a_label_are_skipped(tmp_path, fitted, synthetic_split, capsys):
    model = tmp_path / "model"
    fitted.save(model)
    table = synthetic_split["test"].astype({"label": object})
    table.loc[table.index[10:], "label"] = ""  # the first 10 rows are labelled, the rest not
    table.to_csv(tmp_path / "partly.csv", index=False)
    assert main(["select", "--model", str(model), "--data", str(tmp_path / "partly.csv"), "--query-col", "query", "--title-col", "title",
                 "--label-col", "label", "--defect-below", "0.5", "--budget", "1000", "--max-per-query", "1000",
                 "--out", str(tmp_path / "o.csv"), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = pd.read_csv(tmp_path / "o.csv", keep_default_na=False)
    labelled = set(zip(table["query"][:10], table["title"][:10]))
    assert summary["skipped_labelled"] >= 10 and not set(zip(out["query"], out["title"])) & labelled
