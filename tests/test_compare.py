"""``defectnas compare``: every model on the same split and rows, the table, plots and sweeps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from defectnas import compare
from defectnas.baselines import models
from defectnas.cli import main
from defectnas.compare import Budget, parse_models, run_compare, run_sweep, subsample_queries
from defectnas.errors import ConfigError

TINY_BUDGET = Budget(epochs=1, pretrain_epochs=1, grid={"query_depth": [1], "title_depth": [1], "d_model": [16], "heads": [2]},
                     grid_epochs=1, gbdt_rounds=20, bert_rows=16, bert_batch=8, bert_max_length=16, search_trials=1, search_child_rows=100,
                     latency_repeats=2)


def _options(tiny_options: dict) -> dict:
    return {k: v for k, v in tiny_options.items() if k != "seed"}


def test_models_scored_on_same_rows(synthetic_pairs, tiny_options, tmp_path, monkeypatch):
    seen: dict[str, list] = {}

    def spy(name, build):
        def fit(train, valid, ctx):
            model = build(train, valid, ctx)
            original = model.predict_proba

            def predict_proba(queries, titles=None, *args, **kwargs):
                seen.setdefault(name, []).append((list(queries), list(titles)))
                return original(queries, titles, *args, **kwargs)

            model.predict_proba = predict_proba
            return model
        return fit

    names = ["tfidf", "dl-gs", "dl-jl", "coattention", "gbdt", "bert"]  # one of each kind of builder (lstm/transfer: as dl-jl)
    if models.search_available():
        names.append("dl-rl")  # through the search hook: 1 child, then the winner retrained
    for name in names:
        monkeypatch.setitem(compare.BUILDERS, name, spy(name, compare.BUILDERS[name]))
    rows = run_compare(synthetic_pairs, tmp_path, ",".join(names), options=_options(tiny_options), threads=1, budget=TINY_BUDGET,
                       quiet=True, echo=lambda m: None)

    test = compare.prepare_split(synthetic_pairs, 0, TINY_BUDGET)["test"]
    first_calls = [calls[0] for calls in seen.values()]
    assert set(seen) == set(names)
    assert all(c == (test["query"].tolist(), test["title"].tolist()) for c in first_calls)  # scored on the test rows
    latency_calls = [calls[-1] for calls in seen.values()]
    assert all(len(c[0]) == compare.LATENCY_PAIRS and c == latency_calls[0] for c in latency_calls)  # timed on the same 100 pairs

    assert [r["model"] for r in rows] == names and all(r["n_test"] == len(test) for r in rows)
    labels = test["label"].to_numpy()
    for r in rows:
        assert 0 <= r["f1"] <= 1 and r["params"] > 0 and r["latency_ms_per_100"] > 0
        # calibration is reported for every model, from its own test probabilities
        p = pd.read_parquet(tmp_path / "predictions.parquet")[f"p_{r['model']}"].to_numpy()
        assert r["brier"] == pytest.approx(np.mean((p - labels) ** 2), abs=1e-9)
        assert r["average_precision"] == pytest.approx(average_precision_score(labels, p), abs=1e-9) and 0 <= r["ece"] <= 1
        assert r["f1_per_ms"] == pytest.approx(r["f1"] / r["served_ms_per_100"])  # per request as served
        assert r["gain_per_ms"] == pytest.approx((r["f1"] - rows[0]["f1"]) / r["served_ms_per_100"])  # over the tfidf floor
        if r["model"] in ("tfidf", "gbdt", "bert"):  # nothing to cache: a served request of one query scored on raw text
            assert r["served_ms_per_100"] > 0 and any(len(set(c[0])) == 1 and len(c[0]) == compare.LATENCY_PAIRS for c in seen[r["model"]])
        else:  # two-tower models: timed separately, from pre-encoded titles
            assert r["served_ms_per_100"] > 0 and r["served_ms_per_100"] != r["latency_ms_per_100"]
    table = pd.read_csv(tmp_path / "results.csv")
    assert {"model", "precision", "recall", "f1", "average_precision", "ece", "brier", "params", "latency_ms_per_100", "served_ms_per_100",
            "train_seconds"} <= set(table.columns)
    assert table["model"].tolist() == names and (table["trainable_params"] <= table["params"]).all()
    assert len(json.loads((tmp_path / "results.json").read_text())) == len(names)
    assert "| dl-jl |" in (tmp_path / "results.md").read_text()
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(preds) == len(test) and all(f"p_{n}" in preds.columns for n in names)
    assert preds["query"].tolist() == test["query"].tolist()
    for png in ("pr_curves.png", "f1_latency.png", "gbdt_importance.png", "reliability.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["test_fingerprint"] == compare.fingerprint(test) and info["split"]["test"]["rows"] == len(test)
    assert info["summary"]["best_f1"] == max(rows, key=lambda r: r["f1"])["model"] and info["summary"]["pareto_front"]


def test_pareto_front_and_summary():
    rows = [{"model": "floor", "f1": 0.15, "served_ms_per_100": 2.0, "f1_per_ms": 0.075, "gain_per_ms": 0.0},
            {"model": "tiny", "f1": 0.16, "served_ms_per_100": 0.5, "f1_per_ms": 0.32, "gain_per_ms": 0.02},
            {"model": "good", "f1": 0.40, "served_ms_per_100": 5.0, "f1_per_ms": 0.08, "gain_per_ms": 0.05},
            {"model": "slow", "f1": 0.35, "served_ms_per_100": 500.0, "f1_per_ms": 0.0007, "gain_per_ms": 0.0004},
            {"model": "best", "f1": 0.45, "served_ms_per_100": 50.0, "f1_per_ms": 0.009, "gain_per_ms": 0.006}]
    assert compare.pareto_front(rows) == ["tiny", "good", "best"]  # floor: tiny is faster and better; slow: good is both
    assert compare.summary(rows) == {"best_f1": "best", "best_f1_per_ms": "tiny", "best_gain_per_ms": "good",
                                     "pareto_front": ["tiny", "good", "best"]}
    assert "best_gain_per_ms" not in compare.summary([{k: v for k, v in r.items() if k != "gain_per_ms"} for r in rows])


def test_repeats_report_mean_and_std(synthetic_pairs, tiny_options, tmp_path):
    rows = run_compare(synthetic_pairs, tmp_path, "tfidf,gbdt", repeats=2, options=_options(tiny_options), threads=1, budget=TINY_BUDGET,
                       quiet=True, echo=lambda m: None)
    assert all(r["repeats"] == 2 and "f1_std" in r for r in rows)
    assert rows[0]["f1_std"] == 0.0  # the floor does not depend on the seed
    assert rows[0]["gain_per_ms"] == 0.0 and "gain_per_ms_std" in rows[1]
    assert " ± " in (tmp_path / "results.md").read_text()
    by_seed = pd.read_csv(tmp_path / "results_by_seed.csv")
    assert sorted(by_seed["seed"].unique()) == [0, 1] and len(by_seed) == 2 * len(rows)
    gbdt = by_seed[by_seed["model"] == "gbdt"]["f1"]
    assert abs(gbdt.mean() - rows[1]["f1"]) < 1e-9  # the table's mean is the mean of these rows


def test_sweep_writes_table(synthetic_pairs, tiny_options, tmp_path):
    rows = run_sweep(synthetic_pairs, tmp_path, "beta", [0.0, 1.0], options=_options(tiny_options), threads=1, budget=TINY_BUDGET,
                     quiet=True, echo=lambda m: None)
    assert [r["beta"] for r in rows] == [0.0, 1.0] and all(r["alpha"] == 1.0 for r in rows)
    assert len(pd.read_csv(tmp_path / "sweep_beta.csv")) == 2 and (tmp_path / "sweep_beta.png").exists()
    with pytest.raises(ConfigError, match="--sweep must be one of"):
        run_sweep(synthetic_pairs, tmp_path, "gamma")


def test_model_names_and_search_hook(synthetic_pairs, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown model.*valid: dl-gs"):
        parse_models("dl-gs,xgboost")
    monkeypatch.setattr(models, "_search_api", lambda: None)
    notes = []
    assert "dl-rl" not in parse_models(None, notes.append) and notes
    with pytest.raises(ConfigError, match="dl-rl needs the search module"):
        run_compare(synthetic_pairs, tmp_path, "dl-rl", budget=TINY_BUDGET, quiet=True, echo=lambda m: None)


def test_subsample_keeps_whole_queries(synthetic_pairs):
    sub = subsample_queries(synthetic_pairs, 100, seed=0)
    assert 100 <= len(sub) < 100 + 8
    counts = synthetic_pairs.groupby("query").size()
    kept = sub.groupby("query").size()
    assert kept.to_dict() == counts[kept.index].to_dict()
    assert subsample_queries(synthetic_pairs, 0, 0) is synthetic_pairs


def test_cli_compare_fast(synthetic_pairs, tmp_path, capsys):
    data = tmp_path / "pairs.csv"
    synthetic_pairs.to_csv(data, index=False)
    rc = main(["compare", "--data", str(data), "--out", str(tmp_path / "out"), "--models", "tfidf,gbdt", "--fast", "--quiet", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "best F1:" in out and "gbdt" in out
    assert (tmp_path / "out" / "results.md").exists() and (tmp_path / "out" / "f1_latency.png").exists()
    assert main(["compare", "--data", str(data), "--out", str(tmp_path / "o2"), "--models", "nope"]) == 2


def test_per_ms_columns_show_significant_digits_not_a_signed_zero():
    rows = [{"model": "bert", "f1": 0.149, "served_ms_per_100": 700.0, "f1_per_ms": 0.000213, "gain_per_ms": -0.0000143}]
    shown = compare.display_rows(rows, ["model", "f1_per_ms", "gain_per_ms"])[0]
    assert shown["gain_per_ms"] == "-1.43e-05" and shown["f1_per_ms"] == "0.000213"
