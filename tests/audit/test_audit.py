"""`defectnas audit` end to end on a tiny model: scores, rates, UBI, missing products, --by, the baseline, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.audit.rates import position_weight
from defectnas.cli import main

from .conftest import result_log


def _audit(model, cache, log, out, *extra) -> int:
    return main(["audit", "--model", str(model), "--cache", str(cache), "--log", str(log), "--out", str(out), "--quiet", *extra])


def test_scores_equal_predict_proba_and_rates_are_their_sums(audit_model, audit_cache, audit_pairs, log_csv, tmp_path):
    out = tmp_path / "a"
    assert _audit(audit_model, audit_cache, log_csv, out) == 0
    assert {p.name for p in out.iterdir()} >= {"scored.parquet", "queries.csv", "summary.json", "report.html"}
    scored = pd.read_parquet(out / "scored.parquet")
    log = pd.read_csv(log_csv)
    assert len(scored) == len(log) and scored["query"].tolist() == log["query"].tolist()  # every row, in order, log columns kept
    titles = dict(zip(audit_pairs["product_id"], audit_pairs["title"]))
    clf = DefectClassifier.load(audit_model)
    expected = clf.predict_proba(log["query"].tolist(), [titles[p] for p in log["product_id"]])
    np.testing.assert_allclose(scored["defect_probability"], expected, atol=1e-5)
    assert (scored["is_defect"] == (scored["defect_probability"] >= clf.threshold_)).all()

    # the log's columns are kept as read (CSV: text)
    p, pos, imp = scored["defect_probability"].to_numpy(), scored["position"].astype(int).to_numpy(), scored["impressions"].astype(float).to_numpy()
    summary = json.loads((out / "summary.json").read_text())
    o = summary["overall"]
    assert o["shown"] == len(log) and o["queries"] == log["query"].nunique() and o["missing"] == 0
    assert o["unweighted"]["rate"] == pytest.approx(p.mean())
    w = 1 / np.log2(1 + pos)
    assert o["position_weighted"]["rate"] == pytest.approx((w * p).sum() / w.sum())
    assert o["traffic_weighted"]["rate"] == pytest.approx((imp * p).sum() / imp.sum())
    assert o["at_threshold"]["rate"] == pytest.approx(scored["is_defect"].mean())
    for name in ("unweighted", "position_weighted", "traffic_weighted"):
        assert o[name]["low"] < o[name]["rate"] < o[name]["high"]

    queries = pd.read_csv(out / "queries.csv")
    by_hand = scored.groupby("query")["defect_probability"].agg(["sum", "size"])
    q = queries.set_index("query").loc[by_hand.index]
    np.testing.assert_allclose(q["expected_defects"], by_hand["sum"])
    assert (q["shown"] == by_hand["size"]).all()
    top3 = scored[pos <= 3].groupby("query")["defect_probability"].sum()
    np.testing.assert_allclose(q.loc[top3.index, "expected_defects_top3"], top3)
    assert (queries["rate_low"] <= queries["defect_rate"]).all() and (queries["defect_rate"] <= queries["rate_high"]).all()
    assert queries["defect_rate"].is_monotonic_decreasing  # worst first
    # the model learned the task: its probabilities rank the true defects first
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(log["label"], p) > 0.8


def test_position_weights_are_dcg():
    np.testing.assert_allclose(position_weight(np.array([1, 3, 7])), [1.0, 0.5, 1 / 3])


def test_batches_and_chunks_do_not_change_results(audit_model, audit_cache, log_csv, tmp_path):
    assert _audit(audit_model, audit_cache, log_csv, tmp_path / "big") == 0
    assert _audit(audit_model, audit_cache, log_csv, tmp_path / "small", "--batch-rows", "13") == 0
    big, small = (pd.read_parquet(tmp_path / d / "scored.parquet") for d in ("big", "small"))
    np.testing.assert_allclose(big["defect_probability"], small["defect_probability"], atol=1e-6)
    a, b = (json.loads((tmp_path / d / "summary.json").read_text())["overall"] for d in ("big", "small"))
    assert a["unweighted"]["rate"] == pytest.approx(b["unweighted"]["rate"])
    # JSON lines in batches too (their line numbers travel with each batch; batches are joined where a query is cut)
    pd.read_csv(log_csv).to_json(tmp_path / "log.jsonl", orient="records", lines=True)
    assert _audit(audit_model, audit_cache, tmp_path / "log.jsonl", tmp_path / "jsonl", "--batch-rows", "13") == 0
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "jsonl" / "scored.parquet")["defect_probability"], big["defect_probability"],
                               atol=1e-6)


def test_ubi_query_events(audit_model, audit_cache, audit_pairs, tmp_path):
    log = result_log(audit_pairs)
    events = []
    for query, part in log.groupby("query", sort=False):
        hits = part.sort_values("position")["product_id"].tolist()
        for i in range(2):  # two searches showed the same page
            events.append({"query_id": f"{query}-{i}", "user_query": query, "query_response_hit_ids": hits,
                           "timestamp": "2026-11-01T00:00:00Z", "application": "web" if i == 0 else "app"})
    events.append({"query_id": "x", "user_query": "an extra query", "query_response_hit_ids": ["p0"], "application": "web"})
    path = tmp_path / "ubi_queries.ndjson"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    assert _audit(audit_model, audit_cache, path, tmp_path / "ubi") == 0
    scored = pd.read_parquet(tmp_path / "ubi" / "scored.parquet")
    assert len(scored) == len(log) + 1
    page = scored[scored["query"] != "an extra query"]
    assert (page["impressions"] == 2).all()  # identical pages of two events collapse into one row each
    merged = page.merge(log, on=["query", "position"], suffixes=("", "_log"))
    assert len(merged) == len(page) and (merged["product_id"] == merged["product_id_log"]).all()  # position = index in the hit list + 1
    assert json.loads((tmp_path / "ubi" / "summary.json").read_text())["traffic"] == "impressions"
    # --by a field of the event: the two searches split by application
    assert _audit(audit_model, audit_cache, path, tmp_path / "ubi_by", "--by", "application") == 0
    groups = {g["value"]: g for g in json.loads((tmp_path / "ubi_by" / "summary.json").read_text())["by"]["application"]}
    assert groups["app"]["shown"] == len(log) and groups["web"]["shown"] == len(log) + 1
    # events read a few at a time collapse as the whole file does (the two searches of a page are in different batches)
    from defectnas.audit.log import iter_log

    batches = [b for b, _ in iter_log(path, batch_rows=3)]
    streamed = pd.concat(batches, ignore_index=True)
    assert len(batches) > 1 and len(streamed) == len(scored)
    cols = ["query", "product_id", "position", "impressions"]
    assert streamed[cols].astype(str).values.tolist() == scored[cols].astype(str).values.tolist()


def test_zipped_log_is_streamed_as_the_plain_one(log_csv, tmp_path):
    import zipfile

    from defectnas.audit.log import iter_log

    with zipfile.ZipFile(tmp_path / "log.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(log_csv, "results.csv")
    plain = [b for b, _ in iter_log(log_csv, batch_rows=100)]
    zipped = [b for b, _ in iter_log(tmp_path / "log.zip", batch_rows=100)]
    assert len(zipped) == len(plain) > 1  # batch by batch, not read whole
    pd.testing.assert_frame_equal(pd.concat(zipped, ignore_index=True), pd.concat(plain, ignore_index=True))


def test_missing_products_are_counted_listed_and_kept(audit_model, audit_cache, audit_pairs, tmp_path):
    log = result_log(audit_pairs)
    log.loc[[0, 5, 9], "product_id"] = ["ghost-1", "ghost-2", "ghost-1"]
    log["title"] = None
    log.loc[12, ["product_id", "title"]] = ["new-99", "acme drill"]  # not cached, but titled: scored on the fly
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    out = tmp_path / "m"
    assert _audit(audit_model, audit_cache, path, out) == 0
    scored = pd.read_parquet(out / "scored.parquet")
    assert len(scored) == len(log)  # never dropped
    assert scored["product_missing"].tolist() == [i in (0, 5, 9) for i in range(len(log))]
    assert scored.loc[[0, 5, 9], "defect_probability"].isna().all() and scored.loc[[0, 5, 9], "is_defect"].isna().all()
    clf = DefectClassifier.load(audit_model)
    assert scored.loc[12, "defect_probability"] == pytest.approx(clf.predict_proba([log.loc[12, "query"]], ["acme drill"])[0], abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["missing"] == 3 and summary["overall"]["shown"] == len(log) - 3
    assert summary["missing_products"]["rows"] == 3 and summary["missing_products"]["products"] == 2
    listed = pd.read_csv(out / "missing_products.csv")
    assert listed.to_dict("records") == [{"product_key": "ghost-1", "rows": 2}, {"product_key": "ghost-2", "rows": 1}]
    assert summary["overall"]["unweighted"]["rate"] == pytest.approx(scored["defect_probability"].mean())  # NaN rows left out
    assert pd.read_csv(out / "queries.csv")["missing_products"].sum() == 3


def test_catalog_instead_of_cache(audit_model, audit_cache, catalog_csv, log_csv, tmp_path):
    assert _audit(audit_model, audit_cache, log_csv, tmp_path / "c") == 0
    assert main(["audit", "--model", str(audit_model), "--catalog", str(catalog_csv), "--log", str(log_csv),
                 "--out", str(tmp_path / "k"), "--quiet"]) == 0
    a, b = (pd.read_parquet(tmp_path / d / "scored.parquet")["defect_probability"] for d in ("c", "k"))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_cache_with_catalog_names_products_and_scores_those_the_cache_lacks(audit_model, audit_cache, audit_pairs, catalog_csv,
                                                                            log_csv, tmp_path):
    """--cache and --catalog together: the cache scores, the catalogue titles the report's
    products (the log has ids only) and a product it has but the cache lacks."""
    log = pd.read_csv(log_csv)
    log.loc[3, "product_id"] = "new-7"
    log.to_csv(tmp_path / "log.csv", index=False)
    catalog = pd.read_csv(catalog_csv)
    catalog["title"] = catalog["title"].str.title()  # the report shows titles as the catalogue writes them, not normalised
    pd.concat([catalog, pd.DataFrame({"product_id": ["new-7"], "title": ["Acme Drill"]})]).to_csv(tmp_path / "cat.csv", index=False)
    out = tmp_path / "t"
    assert main(["audit", "--model", str(audit_model), "--cache", str(audit_cache), "--catalog", str(tmp_path / "cat.csv"),
                 "--log", str(tmp_path / "log.csv"), "--out", str(out), "--quiet"]) == 0
    scored = pd.read_parquet(out / "scored.parquet")
    assert not scored["product_missing"].any()
    clf = DefectClassifier.load(audit_model)
    assert scored.loc[3, "defect_probability"] == pytest.approx(clf.predict_proba([log.loc[3, "query"]], ["acme drill"])[0], abs=1e-5)
    titles = dict(zip(catalog["product_id"], catalog["title"]), **{"new-7": "Acme Drill"})
    shown = [p for q in json.loads((out / "summary.json").read_text())["worst_queries"] for p in q["defect_products"]]
    assert shown and all(p["title"] == titles[p["product_key"]] for p in shown)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert shown[0]["title"] in page
    assert _audit(audit_model, audit_cache, log_csv, tmp_path / "ids") == 0  # the cache alone: no titles to show
    assert all(p["title"] is None for q in json.loads((tmp_path / "ids" / "summary.json").read_text())["worst_queries"]
               for p in q["defect_products"])


def test_by_groups(audit_model, audit_cache, log_csv, tmp_path):
    out = tmp_path / "g"
    assert _audit(audit_model, audit_cache, log_csv, out, "--by", "category", "position") == 0
    summary = json.loads((out / "summary.json").read_text())
    scored = pd.read_parquet(out / "scored.parquet")
    groups = {g["value"]: g for g in summary["by"]["category"]}
    assert set(groups) == {"tools", "garden"}
    for value, part in scored.groupby("category"):
        g = groups[value]
        assert g["shown"] == len(part) and g["queries"] == part["query"].nunique()
        assert g["unweighted"]["rate"] == pytest.approx(part["defect_probability"].mean())
        assert g["traffic_weighted"]["rate"] == pytest.approx(np.average(part["defect_probability"], weights=part["impressions"].astype(float)))
    assert sorted(int(g["value"]) for g in summary["by"]["position"]) == list(range(1, 9))
    assert main(["audit", "--model", str(audit_model), "--cache", str(audit_cache), "--log", str(log_csv), "--out", str(tmp_path / "x"),
                 "--by", "categroy", "--quiet"]) == 2


def test_baseline_log_finds_the_queries_that_got_worse(audit_model, audit_cache, audit_pairs, tmp_path):
    old = result_log(audit_pairs)
    new = old.copy()
    # three queries now show their defect products at the top, and every relevant product swapped for a defect
    victims = sorted(old["query"].unique())[:3]
    defects = audit_pairs[audit_pairs["label"] == 1]
    for q in victims:
        rows = new.index[new["query"] == q]
        wrong = defects[defects["query"] != q]["product_id"].sample(len(rows), random_state=0).to_numpy()
        new.loc[rows, "product_id"] = wrong
    old.to_csv(tmp_path / "old.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "b"
    assert _audit(audit_model, audit_cache, tmp_path / "new.csv", out, "--baseline-log", str(tmp_path / "old.csv"), "--by", "category") == 0
    summary = json.loads((out / "summary.json").read_text())
    b = summary["baseline"]
    assert b["overall"]["queries_in_both"] == old["query"].nunique()
    assert b["overall"]["unweighted"]["change"] == pytest.approx(b["overall"]["unweighted"]["new"] - b["overall"]["unweighted"]["old"])
    assert b["overall"]["unweighted"]["change"] > 0
    changes = pd.read_csv(out / "changes.csv")
    worse = set(changes.loc[changes["worse"], "query"])
    assert worse and worse <= set(victims)
    # unchanged queries: same products, same model → change 0 with a zero-width (paired) interval
    same = changes[~changes["query"].isin(victims)]
    np.testing.assert_allclose(same["change"], 0, atol=1e-12)
    np.testing.assert_allclose(same["change_high"] - same["change_low"], 0, atol=1e-6)
    assert {g["value"] for g in b["by"]["category"]} == {"tools", "garden"}
    assert (out / "baseline" / "scored.parquet").is_file() and (out / "baseline" / "queries.csv").is_file()


def test_bad_input_is_one_line_exit_2(audit_model, audit_cache, audit_pairs, tmp_path, capsys):
    log = result_log(audit_pairs)
    log.drop(columns=["position"]).to_csv(tmp_path / "nopos.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "nopos.csv", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nopos.csv" in err and "position" in err and "\n" not in err
    log.loc[6, "position"] = 0
    log.to_csv(tmp_path / "badpos.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "badpos.csv", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert "badpos.csv: row 7:" in err and "'position'" in err and "\n" not in err
    assert _audit(audit_model, audit_cache, tmp_path / "absent.csv", tmp_path / "o") == 2
    assert "file not found" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"query": "a", "product_id": "p1", "position": 1}\n{oops\n')
    assert _audit(audit_model, audit_cache, tmp_path / "bad.jsonl", tmp_path / "o") == 2
    assert "line 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a run that stopped on an error leaves no empty --out folder behind
    (tmp_path / "mine").mkdir()  # ... but never removes a folder the user had
    assert _audit(audit_model, audit_cache, tmp_path / "badpos.csv", tmp_path / "mine" / "o") == 2
    assert (tmp_path / "mine").is_dir() and not (tmp_path / "mine" / "o").exists()
    assert _audit(audit_model, audit_cache, tmp_path / "badpos.csv", tmp_path / "mine") == 2
    assert (tmp_path / "mine").is_dir()


def test_the_error_names_the_first_bad_row_whatever_its_kind_and_counts_all(audit_model, audit_cache, audit_pairs, tmp_path, capsys):
    """Checks run column by column, but the error is the log's first bad row (a position on row 3
    before an empty query on row 8), and "more rows" counts the bad rows of every kind."""
    log = result_log(audit_pairs).astype({"position": object, "impressions": object})
    log.loc[7, "query"] = ""
    log.loc[2, "position"] = 0
    log.loc[12, "impressions"] = -3
    log.to_csv(tmp_path / "messy.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "messy.csv", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "messy.csv: row 3: position '0'" in err and "(and 2 more rows)" in err


def test_invalid_rows_skip_leaves_out_and_lists_each_bad_row(audit_model, audit_cache, audit_pairs, tmp_path, capsys):
    """--invalid-rows skip: a row with a bad cell of each kind is left out of every rate, named with
    its reason in skipped_rows.csv and summary.json; the other rows score as in a clean log."""
    log = result_log(audit_pairs)
    clean = tmp_path / "clean.csv"
    bad_rows = {3: ("query", ""), 10: ("position", 0), 17: ("position", "2.5"), 24: ("impressions", -1), 31: ("product_id", None)}
    dirty = log.copy().astype({"position": object, "impressions": object})
    for i, (column, value) in bad_rows.items():
        dirty.loc[i, column] = value
    log.drop(index=list(bad_rows)).to_csv(clean, index=False)
    dirty.to_csv(tmp_path / "dirty.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "dirty.csv", tmp_path / "o") == 2  # the default: one line, the first bad row
    assert "row 4:" in capsys.readouterr().err
    assert _audit(audit_model, audit_cache, tmp_path / "dirty.csv", tmp_path / "s", "--invalid-rows", "skip") == 0
    assert "5 rows with a bad cell left out" in capsys.readouterr().err
    listed = pd.read_csv(tmp_path / "s" / "skipped_rows.csv", keep_default_na=False)
    assert listed["row"].tolist() == [i + 1 for i in sorted(bad_rows)]  # 1-based data rows, in order
    assert list(listed.columns) == ["row", "reason", "query", "product_id", "position", "impressions"]  # the cells, to fix them
    assert listed.loc[0, "query"] == "" and listed.loc[1, "query"] == log.loc[10, "query"] and str(listed.loc[2, "position"]) == "2.5"
    reasons = dict(zip(listed["row"], listed["reason"]))
    assert "empty query" in reasons[4] and "position '0'" in reasons[11] and "2.5" in reasons[18] and "impressions '-1'" in reasons[25]
    assert "empty product id" in reasons[32]  # this log has no titles to stand in for an id
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["skipped_rows"]["rows"] == 5 and summary["skipped_rows"]["file"] == "skipped_rows.csv"
    assert summary["rows_in_log"] == len(log) and summary["rows"] == len(log) - 5
    html = (tmp_path / "s" / "report.html").read_text()
    assert '<span data-key="skipped_rows.rows">5</span> rows of the log had a bad cell and were left out' in html
    assert _audit(audit_model, audit_cache, clean, tmp_path / "c") == 0
    reference = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["rows"] == reference["rows"] == len(log) - 5 and reference["skipped_rows"]["rows"] == 0
    assert summary["overall"]["unweighted"]["rate"] == pytest.approx(reference["overall"]["unweighted"]["rate"])
    assert not (tmp_path / "c" / "skipped_rows.csv").exists()
    # every row bad: an error that points at the list, not an empty report
    dirty.assign(query="").to_csv(tmp_path / "none.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "none.csv", tmp_path / "n", "--invalid-rows", "skip") == 2
    assert "no row could be audited" in capsys.readouterr().err and (tmp_path / "n" / "skipped_rows.csv").exists()


def test_a_query_or_title_of_invisible_characters_is_empty(audit_model, audit_cache, audit_pairs, tmp_path, capsys):
    """What the model would see decides: zero-width spaces and soft hyphens alone are an empty
    query (or a missing title), as predict and train judge them, not a text to score."""
    log = result_log(audit_pairs).head(16)
    log.loc[5, "query"] = "\u200b"
    log.to_csv(tmp_path / "zw.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "zw.csv", tmp_path / "e") == 2
    assert "row 6: empty query" in capsys.readouterr().err
    assert _audit(audit_model, audit_cache, tmp_path / "zw.csv", tmp_path / "s", "--invalid-rows", "skip") == 0
    assert pd.read_csv(tmp_path / "s" / "skipped_rows.csv")["row"].tolist() == [6]
    titled = log.drop(columns=["product_id"]).assign(title="Drill")
    titled.loc[5, "query"] = "drill"
    titled.loc[7, "title"] = "\u200b\u00ad"
    titled.to_csv(tmp_path / "zwt.csv", index=False)
    assert main(["audit", "--model", str(audit_model), "--log", str(tmp_path / "zwt.csv"), "--out", str(tmp_path / "t"), "--quiet",
                 "--invalid-rows", "skip"]) == 0
    listed = pd.read_csv(tmp_path / "t" / "skipped_rows.csv")
    assert listed["row"].tolist() == [8] and "no product id and no title" in listed["reason"][0]


def test_product_locale_keys_products_as_the_cache_does(audit_model, tmp_path):
    """ESCI-style: one id, two locales, two titles; the log's product_locale picks the right one."""
    from defectnas.serving.cache import build_cache

    catalog = pd.DataFrame({"product_id": ["B1", "B1", "B2"], "product_locale": ["us", "es", "us"],
                            "title": ["acme drill", "bolt lamp", "crest paint"]})
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    build_cache(audit_model, tmp_path / "catalog.csv", tmp_path / "cache", dtype="float32")
    log = pd.DataFrame({"query": ["cordless drill"] * 3, "product_id": ["B1", "B1", "B2"], "product_locale": ["us", "es", "jp"],
                        "position": [1, 2, 3]})
    log.to_csv(tmp_path / "log.csv", index=False)
    assert _audit(audit_model, tmp_path / "cache", tmp_path / "log.csv", tmp_path / "o") == 0
    scored = pd.read_parquet(tmp_path / "o" / "scored.parquet")
    clf = DefectClassifier.load(audit_model)
    expected = clf.predict_proba(["cordless drill"] * 2, ["acme drill", "bolt lamp"])
    np.testing.assert_allclose(scored["defect_probability"][:2], expected, atol=1e-5)
    assert scored["product_missing"].tolist() == [False, False, True]  # B2 exists only in us
    assert pd.read_csv(tmp_path / "o" / "missing_products.csv")["product_key"].tolist() == ["jp:B2"]


@pytest.mark.parametrize("layout", ["csv_float_text", "parquet_float", "parquet_int", "catalog_float_text"])
def test_numeric_ids_match_the_cache_however_they_are_spelled(audit_model, audit_pairs, tmp_path, layout):
    """pandas writes an integer id column with a gap as 100003.0: log and catalogue must still meet."""
    from defectnas.serving.cache import build_cache

    numbers = {p: 100000 + i for i, p in enumerate(sorted(audit_pairs["product_id"].unique()))}
    pairs = audit_pairs.assign(product_id=audit_pairs["product_id"].map(numbers))
    catalog = pairs[["product_id", "title"]].drop_duplicates("product_id")
    if layout == "catalog_float_text":
        catalog = catalog.assign(product_id=[f"{v}.0" for v in catalog["product_id"]])
    catalog.to_csv(tmp_path / "products.csv", index=False)
    build_cache(audit_model, tmp_path / "products.csv", tmp_path / "cache", dtype="float32")
    log = result_log(pairs)
    if layout == "csv_float_text":
        path = tmp_path / "log.csv"
        log.assign(product_id=log["product_id"].astype(float)).to_csv(path, index=False)
        assert "100000.0" in path.read_text()
    else:
        path = tmp_path / "log.parquet"
        log.assign(product_id=log["product_id"].astype(float if layout == "parquet_float" else int)).to_parquet(path)
    assert _audit(audit_model, tmp_path / "cache", path, tmp_path / "o") == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["overall"]["missing"] == 0 and summary["overall"]["shown"] == len(log)


def test_a_log_with_nothing_to_score_is_an_error_not_a_report_of_nan(audit_model, audit_cache, audit_pairs, tmp_path, capsys):
    log = result_log(audit_pairs)
    log.assign(product_id=[f"ghost-{i % 5}" for i in range(len(log))]).to_csv(tmp_path / "ghosts.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "ghosts.csv", tmp_path / "g") == 2
    err = capsys.readouterr().err.strip()
    assert "ghosts.csv" in err and f"none of its {len(log)} shown results" in err and "5 products" in err and "\n" not in err
    assert pd.read_csv(tmp_path / "g" / "missing_products.csv")["rows"].sum() == len(log)  # the list is still written
    log.head(0).to_csv(tmp_path / "header_only.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "header_only.csv", tmp_path / "h") == 2
    err = capsys.readouterr().err.strip()
    assert "header_only.csv" in err and "no shown results" in err


def test_a_log_with_titles_needs_no_cache_or_catalogue(audit_model, audit_pairs, tmp_path, capsys):
    log = result_log(audit_pairs)
    log = log.assign(title=log["product_id"].map(dict(zip(audit_pairs["product_id"], audit_pairs["title"])))).drop(columns=["product_id"])
    log.to_csv(tmp_path / "titled.csv", index=False)
    out = tmp_path / "t"
    assert main(["audit", "--model", str(audit_model), "--log", str(tmp_path / "titled.csv"), "--out", str(out), "--quiet"]) == 0
    scored = pd.read_parquet(out / "scored.parquet")
    expected = DefectClassifier.load(audit_model).predict_proba(log["query"].tolist(), log["title"].tolist())
    np.testing.assert_allclose(scored["defect_probability"], expected, atol=1e-5)
    result_log(audit_pairs).to_csv(tmp_path / "ids.csv", index=False)  # ids only: something must title them
    assert main(["audit", "--model", str(audit_model), "--log", str(tmp_path / "ids.csv"), "--out", str(tmp_path / "i"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ids.csv has product ids but no titles" in err and "--cache" in err and "\n" not in err
