"""What ``compare`` records and times: the budget that ran, the spread of parameters over seeds,
every model saved, served latency at serve's one thread with passive OpenMP waits, and a sweep
that refuses flags it would ignore."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from defectnas import compare
from defectnas.baselines import load_model
from defectnas.cli import main
from defectnas.compare import Budget, run_compare

TINY_BUDGET = Budget(epochs=2, pretrain_epochs=1, grid_epochs=3, gbdt_rounds=20, latency_repeats=2)


def test_run_json_records_the_budget_that_ran_and_save_models_keeps_tfidf(synthetic_pairs, tmp_path):
    run_compare(synthetic_pairs, tmp_path, "tfidf", options={"epochs": 1}, threads=1, budget=TINY_BUDGET, save_models=True,
                quiet=True, echo=lambda m: None)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["budget"]["epochs"] == 1 and info["budget"]["grid_epochs"] == 1  # --epochs 1 ran, not the budget's 2 and 3
    assert info["budget"]["pretrain_epochs"] == 1 and info["options"] == {"epochs": 1}
    assert info["served_threads"] == 1 and "load_average" in info
    floor = load_model(tmp_path / "models" / "tfidf")  # the floor is saved like every model
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    np.testing.assert_allclose(floor.predict_proba(preds["query"].tolist(), preds["title"].tolist()), preds["p_tfidf"], atol=1e-12)


def test_repeats_show_the_spread_of_params_like_every_column():
    def run(params: int) -> list[dict]:
        return [{"model": "gbdt", "params": params, "trainable_params": params, "n_test": 10, "f1": 0.5},
                {"model": "dl-jl", "params": 900, "trainable_params": 90, "n_test": 10, "f1": 0.4}]

    gbdt, dl = compare.aggregate([run(3538), run(7686), run(122)])
    assert gbdt["params"] == pytest.approx(np.mean([3538, 7686, 122])) and gbdt["params_std"] == pytest.approx(np.std([3538, 7686, 122], ddof=1))
    assert dl["params"] == 900 and dl["params_std"] == 0.0  # the same for every seed: still a whole number
    shown = compare.display_rows([gbdt, dl], ["model", "params"])
    assert shown[0]["params"] == "3782 ± 3788" and shown[1]["params"] == "900 ± 0"


def test_served_latency_is_timed_at_serve_thread_count(synthetic_pairs, tmp_path, monkeypatch):
    """The raw column at --threads; the served request at 1 thread, at least 30 times (the search's policy)."""
    calls = []
    real = compare.median_ms

    def spy(call, repeats, threads=None, warmup=2):
        calls.append((repeats, threads))
        return real(call, 1, threads, warmup=0)

    monkeypatch.setattr(compare, "median_ms", spy)
    rows = run_compare(synthetic_pairs, tmp_path, "tfidf", threads=2, budget=TINY_BUDGET, quiet=True, echo=lambda m: None)
    assert (compare.SERVED_REPEATS, 1) in calls and (TINY_BUDGET.latency_repeats, 2) in calls
    assert rows[0]["served_ms_per_100"] > 0 and rows[0]["f1_per_ms"] == pytest.approx(rows[0]["f1"] / rows[0]["served_ms_per_100"])

    seen = {}  # a two-tower model: serve's request timer, at 1 thread
    monkeypatch.setattr("defectnas.serving.encoding.request_latency_ms",
                        lambda clf, queries, titles, repeats, threads=None, warmup=2: seen.update(threads=threads, repeats=repeats) or 1.0)

    class TwoTower:
        model_ = type("Net", (), {"encode_title": None})()

    assert compare.measure_served_latency(TwoTower(), ["q"], ["t"] * 100) == 1.0 and seen == {"threads": 1, "repeats": 30}


def test_compare_lets_openmp_threads_sleep_as_quickstart_does(tmp_path):
    """OMP_WAIT_POLICY=PASSIVE is set before torch or LightGBM load (importing compare loads neither)."""
    code = ("import os, sys; import defectnas.compare; loaded = 'torch' in sys.modules or 'lightgbm' in sys.modules; "
            "from defectnas.cli import main; "
            f"rc = main(['compare', '--data', {str(tmp_path / 'missing.csv')!r}, '--out', {str(tmp_path / 'out')!r}, '--models', 'tfidf', '--quiet']); "
            "print(rc, os.environ.get('OMP_WAIT_POLICY'), loaded)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "PASSIVE", "False"], out.stderr


def test_sweep_refuses_flags_it_would_ignore(tmp_path, capsys):
    for flags in (["--models", "gbdt"], ["--save-models"]):
        assert main(["compare", "--data", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o"), "--sweep", "alpha", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"drop {flags[0]}" in err and "dl-jl only" in err
