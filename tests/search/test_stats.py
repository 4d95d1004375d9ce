"""The search's noise statistics: the intraclass correlations, the closing verdicts and their caveats."""

from __future__ import annotations

import numpy as np
import pytest

from defectnas.search.stats import bootstrap_icc, icc, icc_consistency, icc_of_mean


def test_icc_separates_architecture_signal_from_seed_noise():
    rng = np.random.default_rng(1)
    arch = rng.normal(0, 1.0, (40, 1))
    assert icc(arch + rng.normal(0, 0.1, (40, 5))) > 0.95  # architecture dominates
    assert abs(icc(rng.normal(0, 1.0, (40, 5)))) < 0.15  # pure noise
    shared_seed = rng.normal(0, 1.0, (1, 5))  # every architecture shares the seeds' luck (common random numbers)
    table = 0.3 * arch + shared_seed + rng.normal(0, 0.05, (40, 5))
    assert icc_consistency(table) > 0.9 > icc(table)  # the shared shift does not reorder architectures
    assert icc_of_mean(0.5, 3) == pytest.approx(0.75)  # Spearman–Brown
    out = bootstrap_icc(table, k=2, resamples=200)
    assert out["crn_low"] <= out["icc_crn"] <= out["crn_high"] and out["icc_crn_k"] >= out["icc_crn"]


def test_the_closing_line_says_when_best_scores_below_the_default_on_test():
    """search ends with best/'s line: a best that scored below train's default on the test split
    (search-time luck) says so there, with the paired verdict, not only in final.json."""
    from defectnas.search.final import _against_default_on_test

    best, default = {"key": "b", "test_ap": 0.272}, {"key": "d", "test_ap": 0.383}
    paired = {"verdict": "not distinguishable from noise", "same_architecture": False}
    line = _against_default_on_test(best, [best, default], "d", paired)
    assert line == "; test AP 0.2720 against train's default's 0.3830 (lower on the mean): not distinguishable from noise"
    assert "lower" not in _against_default_on_test({**best, "test_ap": 0.4}, [best, default], "d", paired)
    assert _against_default_on_test(best, [best, default], "d", None) == ""  # no test split
    assert _against_default_on_test(default, [default], "d", {**paired, "same_architecture": True}) == ""  # best is the default


def test_a_verdict_of_more_than_noise_on_few_test_queries_carries_the_small_split_caveat():
    """The start-up note says a split of < 50 queries is mostly noise; the verdict at the end repeats it
    where it claims a difference (helper, session 21: "better by more than noise" on 30 test queries)."""
    from defectnas.search.final import _against_default_on_test, _caveat
    from defectnas.training.significance import FEW_QUERIES

    better = {"ci_low": 0.01, "ci_high": 0.05, "queries": 30}
    assert _caveat(better) == " — but on 30 test queries only, too few for the interval to be trusted"
    assert _caveat({**better, "ci_low": -0.05, "ci_high": -0.01}) == _caveat(better)  # worse, likewise
    assert _caveat({**better, "ci_low": -0.01}) == ""  # "not distinguishable" needs no caveat
    assert _caveat({**better, "queries": FEW_QUERIES}) == ""  # enough queries
    best, default = {"key": "b", "test_ap": 0.4}, {"key": "d", "test_ap": 0.3}
    paired = {"verdict": "better by more than noise", "same_architecture": False, "caveat": _caveat(better)}
    assert _against_default_on_test(best, [best, default], "d", paired).endswith("better by more than noise — but on 30 test "
                                                                                 "queries only, too few for the interval to be trusted")


def test_a_search_past_its_budget_says_by_how_much_and_where():
    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import _say_budget_overrun

    said = []
    report = {"retrain": {"seconds": 200.0, "estimate_s": 147.6}, "distilled": {"seconds": 77.0}}
    _say_budget_overrun(SearchConfig(data="x", budget_minutes=4), 331.9, report, said.append)
    assert said == ["note: this run took 5.5 min against --budget-minutes 4 (+38%): retraining and distillation took 277 s where 148 s "
                    "were reserved; the budget stops sampling on estimates made from the children's own seconds, so other load on the "
                    "machine, or a budget too small for the noise floor and one batch, overruns it"]
    _say_budget_overrun(SearchConfig(data="x", budget_minutes=4), 250.0, report, said.append)  # within 10%: nothing
    _say_budget_overrun(SearchConfig(data="x", budget_minutes=0), 9999.0, report, said.append)  # no budget
    assert len(said) == 1
