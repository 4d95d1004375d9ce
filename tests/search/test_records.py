"""The trial log, the reward, the Pareto front, the plots and the resume rules of the config."""

from __future__ import annotations

import json

import pytest

from defectnas.errors import ConfigError
from defectnas.search.child import reward
from defectnas.search.config import SearchConfig, merge_for_resume
from defectnas.search.plots import pareto_front, plot_final, plot_noise, plot_pareto, plot_rewards
from defectnas.search.space import SearchSpace
from defectnas.search.trials import TrialLog

ARCH_A = SearchSpace().default_architecture()
ARCH_B = [{"mixer": "glu", "heads": 1, "ffn": "sepconv3", "ratio": 8}] * 5


def record(trial: int, arch, reward_: float) -> dict:
    return {"trial": trial, "step": trial, "architecture": arch, "reward": reward_, "f1": reward_, "latency_ms": 5.0,
            "params": 10, "seconds": 1.0, "cached": False}


def test_log_survives_a_torn_line_and_keeps_appending(tmp_path):
    path = tmp_path / "trials.jsonl"
    log = TrialLog(path)
    log.append(record(0, ARCH_A, 0.5))
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"trial": 1, "architec')  # killed mid-write
    log = TrialLog(path)
    assert sorted(log.by_trial) == [0]
    log.append(record(1, ARCH_B, 0.7))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["trial"] for r in lines] == [0, 1]
    with pytest.raises(ValueError, match="already logged"):
        log.append(record(1, ARCH_B, 0.7))


def test_cache_and_top_k_count_distinct_trained_architectures(tmp_path):
    log = TrialLog(tmp_path / "trials.jsonl")
    log.append(record(0, ARCH_A, 0.5))
    log.append(record(1, ARCH_B, 0.7))
    log.append(log.cached_copy(2, 2, ARCH_B, [0] * 15, log.by_trial[1]))
    repeat = TrialLog(tmp_path / "trials.jsonl").by_trial[2]
    assert repeat["cached"] is True and repeat["cached_from"] == 1 and repeat["seconds"] == 0.0 and repeat["reward"] == 0.7
    assert [r["trial"] for r in log.top_k(5)] == [1, 0]
    assert len(log.cache) == 2 and len(log) == 3


def test_reward_is_the_metric_mnasnet_or_a_hard_budget():
    assert reward(0.6, 30.0, 10.0, 0.0) == 0.6
    assert reward(0.6, 10.0, 10.0, 0.07) == pytest.approx(0.6)
    assert reward(0.6, 20.0, 10.0, 0.5) == pytest.approx(0.6 * 2 ** -0.5)  # slower: less
    assert reward(0.6, 5.0, 10.0, 0.5) > 0.6  # faster: more
    assert reward(0.6, 12.0, budget_ms=10.0) == 0.0  # over the budget: no credit (TuNAS)
    assert reward(0.6, 9.9, budget_ms=10.0) == 0.6
    assert reward(0.6, 9.9, 10.0, 0.5, budget_ms=10.0) == pytest.approx(0.6 * 0.99 ** -0.5)


def test_pareto_front():
    points = [(10.0, 0.5), (5.0, 0.4), (20.0, 0.6), (12.0, 0.45), (5.0, 0.3), (30.0, 0.55)]
    assert sorted(pareto_front(points)) == [0, 1, 2]
    assert pareto_front([]) == []


def test_plots_are_png(tmp_path):
    records = [record(i, ARCH_A if i % 2 else ARCH_B, 0.4 + 0.01 * i) for i in range(6)]
    records[3]["cached"] = True
    floor = {"reward_search_seeds": 0.42, "metric_search_seeds": 0.42, "std_of_mean": 0.01, "latency_ms": 5.0}
    plot_rewards(records, tmp_path / "rewards.png", floor=floor)
    plot_pareto(records, tmp_path / "pareto.png", floor=floor)
    plot_noise(records, tmp_path / "noise.png", floor=floor)
    rows = [{"key": "d", "roles": ["default"], "latency_ms": 10.0, "valid_metric": 0.18, "test_ap": 0.24, "pareto_dir": "p/1"},
            {"key": "b", "roles": ["top_k"], "latency_ms": 12.0, "valid_metric": 0.19, "test_ap": 0.25, "best": True, "pareto_dir": "p/2"},
            {"key": "s", "roles": ["distilled"], "distilled_from": "b", "latency_ms": 4.0, "valid_metric": 0.18, "test_ap": 0.245,
             "pareto_dir": "p/0", "teacher_latency_ms": 11.5, "teacher_test_ap_seed": 0.251, "teacher_valid_ap_seed": 0.19}]
    plot_final(rows, tmp_path / "final.png")
    plot_final([{**r, "test_ap": None} for r in rows], tmp_path / "final_valid.png")  # no test split: validation
    for name in ("rewards.png", "pareto.png", "noise.png", "final.png", "final_valid.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_may_change_only_how_much_and_where():
    saved = SearchConfig(data="x.csv", trials=10, seed=3, batch_size=2, latency_target_ms=12.0)
    merged = merge_for_resume(saved, {"trials": 20, "workers": 2, "seed": 3, "batch_size": 0, "latency_target_ms": 0.0})
    assert merged.trials == 20 and merged.workers == 2 and merged.batch_size == 2 and merged.latency_target_ms == 12.0
    with pytest.raises(ConfigError, match="child_epochs: started with 1, now 3"):
        merge_for_resume(saved, {"child_epochs": 3})
    with pytest.raises(ConfigError, match="strategy: started with 'rl', now 'evolution'"):
        merge_for_resume(saved, {"strategy": "evolution"})


def test_config_validation():
    with pytest.raises(ConfigError, match="strategy"):
        SearchConfig(strategy="annealing")
    with pytest.raises(ConfigError, match="--space \\(space\\) must be one of serving, seed"):
        SearchConfig(space="huge")
    with pytest.raises(ConfigError, match="reward_metric"):
        SearchConfig(reward_metric="auc")
    with pytest.raises(ConfigError, match="--matching is for --space seed"):
        SearchConfig(space="serving", matching=True)
    with pytest.raises(ConfigError, match="child_seeds"):
        SearchConfig(child_seeds=0)
    with pytest.raises(ConfigError, match="title_layers is what the search chooses"):
        SearchConfig(options={"title_layers": []})
    with pytest.raises(ConfigError, match="unknown search setting"):
        SearchConfig.from_dict({"trails": 3})
