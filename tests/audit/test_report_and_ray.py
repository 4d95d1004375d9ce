"""report.html against summary.json; the Ray path against the local one; the interval methods."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from defectnas.audit import AuditConfig, run_audit
from defectnas.audit import rates
from defectnas.audit.report import fixed as _fmt

from .conftest import result_log


def _lookup(summary: dict, key: str):
    value = summary
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_report_numbers_are_summary_numbers(audit_model, audit_cache, audit_pairs, tmp_path):
    old = result_log(audit_pairs, seed=1)
    new = result_log(audit_pairs, seed=2)
    old.to_csv(tmp_path / "old.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "r"
    summary = run_audit(AuditConfig(model=str(audit_model), log=str(tmp_path / "new.csv"), out=str(out), cache=str(audit_cache),
                                    by=["category"], baseline_log=str(tmp_path / "old.csv"), quiet=True))
    page = (out / "report.html").read_text(encoding="utf-8")
    on_disk = json.loads((out / "summary.json").read_text())
    tagged = re.findall(r'<span data-key="([^"]+)">([^<]*)</span>', page)
    keys = {k for k, _ in tagged}
    for needed in ("overall.unweighted.rate", "overall.unweighted.low", "overall.position_weighted.rate", "overall.traffic_weighted.high",
                   "overall.at_threshold.rate", "positions.0.defect_rate", "worst_queries.0.defect_rate", "by.category.0.unweighted.rate",
                   "baseline.overall.unweighted.change", "baseline.overall.unweighted.low"):
        assert needed in keys
    for key, shown in tagged:
        value = _lookup(on_disk, key)
        digits = 0 if isinstance(value, int) else 1 if key == "overall.expected_defects" else 4
        assert shown == _fmt(value, digits), key
        if isinstance(value, float) and digits == 4:
            assert abs(float(shown) - value) <= 5e-5
    assert on_disk["overall"]["unweighted"]["rate"] == pytest.approx(summary["overall"]["unweighted"]["rate"])
    # self-contained: plots inline, nothing fetched from elsewhere
    assert page.count('src="data:image/png;base64,') >= 3
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page


@pytest.mark.xdist_group("ray")  # one worker runs the Ray tests in turn (pyproject: --dist loadgroup)
def test_ray_actors_give_the_local_results(audit_model, audit_cache, log_csv, tmp_path):
    """Ray is part of the test install: this runs, it does not skip."""
    import ray

    local = run_audit(AuditConfig(model=str(audit_model), log=str(log_csv), out=str(tmp_path / "local"), cache=str(audit_cache),
                                  chunk_rows=50, quiet=True, threads=1))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_audit(AuditConfig(model=str(audit_model), log=str(log_csv), out=str(tmp_path / "ray"), cache=str(audit_cache),
                                       chunk_rows=50, quiet=True, ray_address="auto"))
    finally:
        ray.shutdown()
    a, b = (pd.read_parquet(tmp_path / d / "scored.parquet") for d in ("local", "ray"))
    np.testing.assert_array_equal(a["defect_probability"].to_numpy(), b["defect_probability"].to_numpy())
    assert a["is_defect"].tolist() == b["is_defect"].tolist()
    assert local["overall"] == remote["overall"]
    assert (tmp_path / "ray" / "queries.csv").read_text() == (tmp_path / "local" / "queries.csv").read_text()


def test_bootstrap_interval_is_seeded_and_covers_the_rate():
    rng = np.random.default_rng(0)
    den = rng.integers(5, 20, size=200).astype(float)
    num = den * rng.uniform(0, 0.4, size=200)
    a = rates.ratio_with_interval(num, den, seed=3)
    assert a == rates.ratio_with_interval(num, den, seed=3)
    assert a["rate"] == pytest.approx(num.sum() / den.sum()) and a["low"] < a["rate"] < a["high"]
    wide = rates.ratio_with_interval(num[:20], den[:20], seed=3)
    assert wide["high"] - wide["low"] > a["high"] - a["low"]  # fewer queries, wider interval


def test_query_interval_is_the_poisson_binomial_normal_approximation():
    p = np.array([0.1, 0.5, 0.9, 0.2])
    sums = rates.row_sums(p, p >= 0.5, np.arange(1, 5), np.ones(4)).assign(_query="q")
    acc = rates.Accumulator(["_query"])
    acc.add(sums)
    table = rates.query_table(acc.result(), False)
    half = 1.959964 * np.sqrt((p * (1 - p)).sum()) / 4
    assert table.loc[0, "defect_rate"] == pytest.approx(p.mean())
    assert table.loc[0, "rate_low"] == pytest.approx(p.mean() - half) and table.loc[0, "rate_high"] == pytest.approx(p.mean() + half)
    assert table.loc[0, "flagged"] == 2 and table.loc[0, "expected_defects_top1"] == pytest.approx(0.1)


def test_report_numbers_never_read_nan_or_a_false_zero():
    from defectnas.html_page import fmt as _fmt

    assert _fmt(float("nan")) == "–" and _fmt(None) == "–"
    assert _fmt(1.7e-5) == "1.7e-05" and _fmt(-2.1e-5) == "-2.1e-05"  # a before/after change that 4 decimals would show as 0.0000
    assert _fmt(0.0) == "0.0000" and _fmt(0.12345) == "0.1235" and _fmt(3) == "3"
