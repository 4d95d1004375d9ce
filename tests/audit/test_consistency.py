"""The audit's numbers do not depend on how a log writes them: a position written "2.0", a query
written "DRILL", a page's rows laid out or batched differently, a repeated row; and a run that
stops after scoring leaves no half-written outputs."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from defectnas.cli import main

from .conftest import result_log

NUMBERS = ["shown", "expected_defects", "defect_rate", "rate_low", "rate_high", "position_weighted_rate", "expected_defects_top1",
           "expected_defects_top3", "flagged", "traffic", "missing_products"]


def _audit(model, cache, log, out, *extra) -> int:
    return main(["audit", "--model", str(model), "--cache", str(cache), "--log", str(log), "--out", str(out), "--quiet", *extra])


def _outputs(out) -> tuple[pd.DataFrame, dict]:
    return pd.read_csv(out / "queries.csv"), json.loads((out / "summary.json").read_text())


def test_whole_numbers_written_as_text_are_those_numbers(audit_model, audit_cache, audit_pairs, tmp_path):
    """F1: a position "2.0" or " 3 " passes the check as 2 and 3 and is used as such everywhere —
    the worst-query list used to convert the raw text again and crash after scoring every row."""
    log = result_log(audit_pairs)
    log.to_csv(tmp_path / "int.csv", index=False)
    text = log.astype({"position": object, "impressions": object})
    text["position"] = [f"{p}.0" if i % 3 == 0 else f" {p} " if i % 3 == 1 else str(p) for i, p in enumerate(log["position"])]
    text["impressions"] = [f"{v}.0" if i % 2 else f" {v}" for i, v in enumerate(log["impressions"])]
    text.to_csv(tmp_path / "text.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "int.csv", tmp_path / "i") == 0
    assert _audit(audit_model, audit_cache, tmp_path / "text.csv", tmp_path / "t") == 0
    (qi, si), (qt, st) = _outputs(tmp_path / "i"), _outputs(tmp_path / "t")
    pd.testing.assert_frame_equal(qi, qt)
    for key in ("overall", "positions", "worst_queries"):
        assert si[key] == st[key], key
    assert all(isinstance(p["position"], int) for q in st["worst_queries"] for p in q["defect_products"])
    scored = pd.read_parquet(tmp_path / "t" / "scored.parquet")
    assert scored["position"].tolist() == text["position"].tolist()  # the log's own column as read ...
    assert scored["shown_at"].tolist() == log["position"].tolist()  # ... beside the number the audit used


def test_a_numeric_query_column_is_read_as_the_audit_read_it(audit_model, audit_cache, audit_pairs, tmp_path):
    """F1's sibling: queries that are numbers in a Parquet log (a model number searched) are matched
    by the audit's own text of them, not by the log's cells compared with text."""
    log = result_log(audit_pairs)
    codes = {q: 1000 + i for i, q in enumerate(sorted(log["query"].unique()))}
    log.assign(query=log["query"].map(codes)).to_parquet(tmp_path / "numeric.parquet")
    assert _audit(audit_model, audit_cache, tmp_path / "numeric.parquet", tmp_path / "n", "--baseline-log",
                  str(tmp_path / "numeric.parquet")) == 0
    queries, summary = _outputs(tmp_path / "n")
    assert len(queries) == len(codes) and summary["worst_queries"][0]["defect_products"]
    assert summary["baseline"]["overall"]["queries_in_both"] == len(codes)


def test_a_run_that_stops_after_scoring_leaves_the_earlier_outputs_as_they_were(audit_model, audit_cache, log_csv, tmp_path,
                                                                                   monkeypatch):
    """Outputs are computed first and written together (summary.json last): an error after scoring
    leaves neither a new scored.parquet beside an old summary nor a temporary file."""
    from defectnas.audit import run

    out = tmp_path / "a"
    assert _audit(audit_model, audit_cache, log_csv, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("a bug after scoring")

    monkeypatch.setattr(run, "worst_queries", broken)
    log = pd.read_csv(log_csv)
    log.head(50).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(RuntimeError):
        run.run_audit(run.AuditConfig(model=str(audit_model), log=str(tmp_path / "other.csv"), out=str(out), cache=str(audit_cache), quiet=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(RuntimeError):  # a new folder: nothing left at all
        run.run_audit(run.AuditConfig(model=str(audit_model), log=str(tmp_path / "other.csv"), out=str(tmp_path / "new"),
                                      cache=str(audit_cache), quiet=True))
    assert not (tmp_path / "new").exists()


def test_spellings_of_one_query_are_one_query(audit_model, audit_cache, audit_pairs, tmp_path):
    """F3: queries are grouped as train and predict normalise them — case, full-width letters,
    spaces and zero-width characters folded — in queries.csv, the query count, the worst queries,
    --by groups and the baseline's pairing; each is shown as the log first spelt it."""
    log = result_log(audit_pairs)
    log.to_csv(tmp_path / "plain.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "plain.csv", tmp_path / "p", "--by", "category") == 0
    qp, sp = _outputs(tmp_path / "p")
    query = sp["worst_queries"][0]["query"]  # spelt four ways below
    spelt = log.copy()
    rows = spelt.index[spelt["query"] == query]
    full_width = "".join(chr(ord(c) + 0xFEE0) if c != " " else c for c in query.upper())
    variants = [query.title(), f"  {query.upper()} ", full_width, query.replace(" ", "\u200b ")]
    spelt.loc[rows, "query"] = [variants[i % len(variants)] for i in range(len(rows))]
    spelt.to_csv(tmp_path / "spelt.csv", index=False)
    log.assign(query=log["query"].str.upper()).to_csv(tmp_path / "upper.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "spelt.csv", tmp_path / "s", "--by", "category",
                  "--baseline-log", str(tmp_path / "upper.csv")) == 0
    qs, ss = _outputs(tmp_path / "s")
    assert len(qs) == log["query"].nunique() and ss["overall"]["queries"] == log["query"].nunique()
    one = qs[qs["query_key"] == query]
    assert len(one) == 1 and one["query"].iloc[0] == query.title()  # the first spelling
    pd.testing.assert_frame_equal(qp.drop(columns="query"), qs.drop(columns="query"))
    assert sp["overall"] == ss["overall"] and sp["by"] == ss["by"]
    assert [q["query_key"] for q in sp["worst_queries"]] == [q["query_key"] for q in ss["worst_queries"]]
    worst = ss["worst_queries"][0]
    assert worst["query"] == query.title() and worst["defect_products"] == sp["worst_queries"][0]["defect_products"]
    changes = pd.read_csv(tmp_path / "s" / "changes.csv")  # the upper-cased baseline pairs query by query, unchanged
    assert len(changes) == log["query"].nunique() and (changes["in"] == "both").all() and (changes["change"] == 0).all()
    assert ss["baseline"]["overall"]["queries_in_both"] == log["query"].nunique()


def test_ubi_events_of_one_query_spelt_two_ways_are_one_page(audit_model, audit_cache, tmp_path):
    events = [{"user_query": q, "query_response_hit_ids": ["p0", "p1"]} for q in ("Black Drill", "black drill")]
    (tmp_path / "ubi.ndjson").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    assert _audit(audit_model, audit_cache, tmp_path / "ubi.ndjson", tmp_path / "u") == 0
    scored = pd.read_parquet(tmp_path / "u" / "scored.parquet")
    assert scored["query"].tolist() == ["Black Drill"] * 2 and scored["impressions"].tolist() == [2, 2]


def test_an_unchanged_page_has_a_change_of_exactly_0(audit_model, audit_cache, audit_pairs, tmp_path):
    """F7: a pair scored in another batch (another chunk, the other log) could differ by ~1e-8;
    each distinct pair is scored once per run and its sums are exact, so a page shown the same in
    both logs has a change of exactly 0 with an interval of exactly [0, 0] — whatever the layout
    of the logs' rows — and identical pairs have identical probabilities."""
    old = result_log(audit_pairs)
    new = old.copy()
    moved = sorted(old["query"].unique())[::4]  # every 4th query gets two products of another query on top
    parts = []
    for query, page in new.groupby("query", sort=False):
        if query in moved:
            extra = old[old["query"] != query].sample(2, random_state=len(parts)).assign(query=query, position=[1, 2])
            page = pd.concat([extra, page.assign(position=page["position"] + 2)])
        parts.append(page)
    pd.concat(parts).to_csv(tmp_path / "new.csv", index=False)
    old.sample(frac=1, random_state=0).to_csv(tmp_path / "old.csv", index=False)  # rows of a query scattered over the log
    assert _audit(audit_model, audit_cache, tmp_path / "new.csv", tmp_path / "b", "--baseline-log", str(tmp_path / "old.csv"),
                  "--by", "category", "--batch-rows", "37") == 0
    changes = pd.read_csv(tmp_path / "b" / "changes.csv")
    same = changes[~changes["query"].isin(moved)]
    assert len(same) == old["query"].nunique() - len(moved)
    assert (same["change"] == 0).all() and (same["change_low"] == 0).all() and (same["change_high"] == 0).all()
    assert not changes[changes["query"].isin(moved)]["change"].eq(0).all()
    a, b = (pd.read_parquet(tmp_path / "b" / d / "scored.parquet") for d in (".", "baseline"))
    paired = a.merge(b, on=["query_key", "product_key"])
    assert len(paired) and (paired["defect_probability_x"] == paired["defect_probability_y"]).all()
    # the page prints fixed-point numbers: no 1e-05, no -3.5e-19
    page = (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    shown = re.findall(r'<span data-key="[^"]+">([^<]*)</span>', page)
    assert shown and not [s for s in shown if "e" in s.lower()]


def test_report_numbers_are_fixed_point():
    from defectnas.audit.report import fixed

    assert fixed(1.7e-5) == "0.000017" and fixed(-2.1e-5) == "-0.000021"  # not 0.0000: a small change is not no change
    assert fixed(-3.5e-19) == "0.0000" and fixed(2.9e-11) == "0.0000"  # float rounding of sums, as worse/better read it
    assert fixed(0.0034) == "0.0034" and fixed(0.0) == "0.0000" and fixed(float("nan")) == "–" and fixed(3) == "3"


def test_exact_duplicate_rows_are_counted_and_said_in_one_line(audit_model, audit_cache, audit_pairs, tmp_path, capsys):
    """F8: a row that repeats an earlier one in every cell counts as one more showing (as every
    row does) and is said in one warning line with the count and the first rows; the same page on
    another day (a column that tells them apart) is no duplicate."""
    log = result_log(audit_pairs)
    doubled = pd.concat([log, log.iloc[[2, 9, 9]]], ignore_index=True)
    doubled.to_csv(tmp_path / "dup.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "dup.csv", tmp_path / "d", "--batch-rows", "100") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "repeat" in line]
    n = len(log)
    assert lines == [f"warning: {tmp_path / 'dup.csv'}: 3 rows repeat an earlier row in every cell (rows {n + 1}, {n + 2}, {n + 3}); "
                     "each counts as one more showing — drop them if a showing was logged twice"]
    _, summary = _outputs(tmp_path / "d")
    assert summary["overall"]["shown"] == n + 3
    doubled.assign(tags=[["a", "b"]] * len(doubled)).to_json(tmp_path / "dup.jsonl", orient="records", lines=True)
    assert _audit(audit_model, audit_cache, tmp_path / "dup.jsonl", tmp_path / "j") == 0  # a list cell is compared as its text
    assert "3 rows repeat an earlier row in every cell" in capsys.readouterr().err
    days = pd.concat([log.assign(day=1), log.assign(day=2)], ignore_index=True)
    days.to_csv(tmp_path / "days.csv", index=False)
    assert _audit(audit_model, audit_cache, tmp_path / "days.csv", tmp_path / "w") == 0
    assert "repeat" not in capsys.readouterr().err


def test_sorted_runs_find_every_key_added_in_any_number_of_batches():
    import numpy as np

    from defectnas.audit.memo import SortedRuns

    rng = np.random.default_rng(0)
    keys = rng.permutation(10_000).astype(np.int64) * 7
    runs = SortedRuns()
    for part in np.array_split(np.arange(len(keys)), 37):
        runs.add(keys[part], keys[part] / 2.0)
    assert len(runs) == len(keys) and len(runs.runs) <= 14  # merged as they grow: a look-up searches few runs
    found, values = runs.get(np.concatenate([keys, keys + 1]))
    assert found[: len(keys)].all() and not found[len(keys):].any()
    assert (values[: len(keys)] == keys / 2.0).all() and np.isnan(values[len(keys):]).all()
