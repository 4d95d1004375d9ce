"""The search loop with fake children: order, caching, strategies, the noise floor, the latency
budget, the Pareto export, checkpoints, resume after crashes and SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from defectnas.errors import ConfigError
from defectnas.search.config import SearchConfig
from defectnas.search.reinforce import Reinforce
from defectnas.search.runner import child_seeds, final_seeds, run_search
from defectnas.search.space import ServingSpace, arch_key
from defectnas.storage import load_tensors

from .conftest import read_trials
from .fakes import fake_f1, fake_latency, kill_test_config

STRATEGIES = ("rl", "random", "evolution")


def config(data: Path, **kw) -> SearchConfig:
    """The seed space by default here (fast to reason about); serving-space tests say so."""
    base = {"trials": 8, "top_k": 0, "pareto_max": 0, "noise_repeats": 0, "seed": 1, "space": "seed", "batch_size": 1,
            "distill_query": 0, "options": {"d_model": 16}}  # fake children leave no model to distil (fake_distiller does)
    return SearchConfig(data=str(data), **{**base, **kw})


def keys(records: list[dict]) -> list[str]:
    return [arch_key(r["architecture"]) for r in records]


def test_search_writes_its_files(tmp_path, synthetic_csv, fake_children):
    result = run_search(config(synthetic_csv, top_k=3, pareto_max=2, noise_repeats=2, final_seeds=2), tmp_path / "s")
    out = tmp_path / "s"
    trials = read_trials(out)
    assert [r["trial"] for r in trials] == list(range(8)) and [r["step"] for r in trials] == list(range(8))
    for r in trials:
        assert {"trial", "architecture", "actions", "reward", "metric", "spread", "ap", "f1", "ap_seeds", "latency_ms",
                "seconds", "cached", "params"} <= set(r)
        assert len(r["ap_seeds"]) == 2 and r["reward"] == pytest.approx(np.mean(r["ap_seeds"]), abs=1e-5)  # AP, mean of K=2 seeds
        assert r["spread"] == pytest.approx(np.std(r["ap_seeds"], ddof=1), abs=1e-6)
    _, meta = load_tensors(out / "controller.safetensors")
    assert meta["step"] == 8 and meta["extra"]["next_trial"] == 8
    for name in ("rewards.png", "pareto.png", "noise.png", "final.png", "search.json", "top_k.json", "final.json", "retrain.jsonl", "noise.jsonl"):
        assert (out / name).exists(), name
    top = json.loads((out / "top_k.json").read_text())
    assert [e["rank"] for e in top] == [1, 2, 3]
    assert top[0]["search_reward"] == max(r["reward"] for r in trials)
    final = json.loads((out / "final.json").read_text())
    best = next(c for c in final["candidates"] if c["best"])
    assert "default" not in best["roles"] and best["valid_metric"] == max(
        c["valid_metric"] for c in final["candidates"] if c["roles"] != ["default"])
    saved = json.loads((out / "best" / "config.json").read_text())["model"]["title_layers"]
    assert arch_key(saved) == arch_key(best["architecture"])
    assert result.best_dir == out / "best" and not (out / "retrain").exists()
    for c in final["candidates"]:  # search-time and retrained scores side by side
        assert c["seeds"] == final_seeds(SearchConfig(seed=1, final_seeds=2)) and {"search_metric", "valid_metric", "test_ap"} <= set(c)
    paired = final["paired_test"]
    assert paired["queries"] > 0
    expected = ("better by more than noise" if paired["ci_low"] > 0 else "worse by more than noise" if paired["ci_high"] < 0
                else "not distinguishable from noise")
    assert paired["verdict"] == expected and paired["beats_default"] == (paired["ci_low"] > 0)
    assert paired["worse_than_default"] == (paired["ci_high"] < 0)
    assert "retrain" in final and final["retrain"]["candidates"] == len(final["candidates"])
    # 2 noise repeats + 8 children (distinct here) + the retrained candidates (default, top-3, front ≤ 2), one job a seed
    assert len(fake_children) == 2 + 8 + 2 * len(final["candidates"])
    assert not list((out / "test_probs").glob("*.seed*.npy"))  # the seeds' probabilities merged, their parts removed


def test_noise_floor_is_measured_first_and_saved(tmp_path, synthetic_csv, fake_children):
    run_search(config(synthetic_csv, trials=3, noise_repeats=3, child_seeds=2), tmp_path / "s")
    floor_jobs = fake_children[:3]
    assert all(arch_key(j["architecture"]) == arch_key(floor_jobs[0]["architecture"]) for j in floor_jobs)
    cfg = SearchConfig(seed=1, child_seeds=2)
    assert [j["seeds"] for j in floor_jobs] == [child_seeds(cfg, 0), child_seeds(cfg, 1), child_seeds(cfg, 2)]
    assert all(j["seeds"] == child_seeds(cfg) for j in fake_children[3:])  # every child: the same K seeds (CRN)
    floor = json.loads((tmp_path / "s" / "search.json").read_text())["noise_floor"]
    assert floor["repeats"] == 3 and floor["child_seeds"] == 2 and floor["std_of_mean"] > 0 and floor["seed_std"] > 0
    means = [r["metric"] for r in floor["per_repeat"]]
    assert floor["std_of_mean"] == pytest.approx(np.std(means, ddof=1), abs=1e-5)


def test_plots_are_redrawn_while_sampling_only_when_the_interval_passed(tmp_path, synthetic_csv, fake_children, monkeypatch):
    import defectnas.search.runner as runner

    drawn: list[int] = []
    monkeypatch.setattr(runner, "write_plots", lambda out, trials, cfg, floor: drawn.append(len(trials.records())))
    run_search(config(synthetic_csv, trials=4), tmp_path / "a")  # fast: no batch waits two minutes
    assert drawn == [4]  # once, at the end
    drawn.clear()
    monkeypatch.setattr(runner, "PLOT_EVERY_S", 0.0)
    run_search(config(synthetic_csv, trials=4), tmp_path / "b")
    assert drawn == [1, 2, 3, 4, 4]  # after each batch (batch_size 1), then at the end


def test_a_busy_machine_is_said_once_and_each_trial_keeps_its_load(tmp_path, synthetic_csv, fake_children, monkeypatch):
    import defectnas.search.runner as runner

    loads = iter([0.4, 9.0, 9.5, 1.0])
    monkeypatch.setattr(runner, "load_average", lambda: next(loads))
    monkeypatch.setattr(runner, "usable_cores", lambda: 2)
    monkeypatch.setattr(runner, "PLOT_EVERY_S", 0.0)  # plots after every batch: still said once
    lines: list[str] = []
    run_search(config(synthetic_csv, trials=4), tmp_path / "s", log=lines.append)
    trained = [r for r in read_trials(tmp_path / "s") if not r["cached"]]  # a repeat keeps its first training's record
    assert [r["load_1m"] for r in trained] == [0.4, 9.0, 9.5, 1.0][: len(trained)] and len(trained) >= 2
    busy = [line for line in lines if "machine is busy" in line]
    assert len(busy) == 1 and "load average 9.0 on 2 cores" in busy[0]
    assert lines.index(busy[0]) < next(i for i, line in enumerate(lines) if line.startswith("trial 1:"))  # said with the trial


def test_same_seed_same_trials_under_every_strategy(tmp_path, synthetic_csv, fake_children):
    for strategy in STRATEGIES:
        kw = {"strategy": strategy, "population": 4, "sample_size": 2, "trials": 10}
        a = run_search(config(synthetic_csv, **kw), tmp_path / f"{strategy}-a").trials
        b = run_search(config(synthetic_csv, **kw), tmp_path / f"{strategy}-b").trials
        c = run_search(config(synthetic_csv, seed=2, **kw), tmp_path / f"{strategy}-c").trials
        assert keys(a) == keys(b) and keys(a) != keys(c), strategy
        assert [r["reward"] for r in a] == [r["reward"] for r in b]


def test_evolution_mutates_the_tournament_winner(tmp_path, synthetic_csv, fake_children):
    space_cfg = config(synthetic_csv, strategy="evolution", population=5, sample_size=3, trials=30, num_layers=2)
    trials = run_search(space_cfg, tmp_path / "s").trials
    from defectnas.search.space import SearchSpace

    space = SearchSpace(num_layers=2)
    for r in trials[5:]:  # after the initial population, every child is one decision away from an earlier trial
        dist = min(sum(a != b for a, b in zip(space.encode(r["architecture"]), space.encode(p["architecture"])))
                   for p in trials[max(0, r["trial"] - 5): r["trial"]])
        assert dist <= 1
    first, last = np.mean([r["reward"] for r in trials[:5]]), np.mean([r["reward"] for r in trials[-10:]])
    assert last > first  # it climbs the fake reward


def test_repeats_are_cached_trials(tmp_path, synthetic_csv, fake_children):
    """One layer: 48 architectures, so 40 trials of a learning controller repeat some."""
    trials = run_search(config(synthetic_csv, trials=40, num_layers=1), tmp_path / "s").trials
    cached = [r for r in trials if r["cached"]]
    assert cached, "expected repeats"
    by_trial = {r["trial"]: r for r in trials}
    for r in cached:
        source = by_trial[r["cached_from"]]
        assert source["cached"] is False and source["trial"] < r["trial"]
        assert arch_key(source["architecture"]) == arch_key(r["architecture"]) and r["reward"] == source["reward"]
        assert len(r["actions"]) == 3
    assert len(fake_children) == len(trials) - len(cached) == len({arch_key(r["architecture"]) for r in trials})


def test_batches_share_a_controller_step(tmp_path, synthetic_csv, fake_children):
    trials = run_search(config(synthetic_csv, trials=7, batch_size=3), tmp_path / "s").trials
    assert [r["step"] for r in trials] == [0, 0, 0, 1, 1, 1, 2]
    assert json.loads((tmp_path / "s" / "search.json").read_text())["batch_size"] == 3
    default = SearchConfig(data=str(synthetic_csv), trials=4, top_k=0, pareto_max=0, noise_repeats=0, space="seed",
                           options={"d_model": 16})
    run_search(default, tmp_path / "d")
    assert json.loads((tmp_path / "d" / "search.json").read_text())["batch_size"] == 4  # rl: standardised over 4


def test_crash_between_trial_line_and_checkpoint_is_replayed(tmp_path, synthetic_csv, fake_children, monkeypatch):
    reference = run_search(config(synthetic_csv, batch_size=2), tmp_path / "ref").trials
    real_save, calls = Reinforce.save, []

    def crashing_save(self, path, extra=None):
        calls.append(1)
        if len(calls) == 3:  # the third batch is logged, its update is not checkpointed
            raise KeyboardInterrupt
        real_save(self, path, extra)

    monkeypatch.setattr(Reinforce, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        run_search(config(synthetic_csv, batch_size=2), tmp_path / "s")
    assert [r["trial"] for r in read_trials(tmp_path / "s")] == [0, 1, 2, 3, 4, 5]
    monkeypatch.setattr(Reinforce, "save", real_save)
    fake_children.clear()
    resumed = run_search(config(synthetic_csv, batch_size=2), tmp_path / "s", resume=True).trials
    assert [r["trial"] for r in read_trials(tmp_path / "s")] == list(range(8))
    assert keys(resumed) == keys(reference)
    assert [r["reward"] for r in resumed] == [r["reward"] for r in reference]
    assert len(fake_children) == 2  # only trials 6 and 7 ran again; 4 and 5 came from the log


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_crash_inside_a_batch_keeps_finished_children(tmp_path, synthetic_csv, fake_children, monkeypatch, strategy):
    import defectnas.search.executors as executors

    kw = {"batch_size": 3, "strategy": strategy, "population": 3, "sample_size": 2, "noise_repeats": 1}
    reference = run_search(config(synthetic_csv, **kw), tmp_path / "ref").trials
    fake, count = executors.evaluate_child, []

    def dies_on_sixth(job, *args):
        count.append(1)
        if len(count) == 6:  # the noise floor, then the second child of the second batch
            raise RuntimeError("killed")
        return fake(job, *args)

    monkeypatch.setattr(executors, "evaluate_child", dies_on_sixth)
    with pytest.raises(RuntimeError, match="killed"):
        run_search(config(synthetic_csv, **kw), tmp_path / "s")
    assert [r["trial"] for r in read_trials(tmp_path / "s")] == [0, 1, 2, 3]
    monkeypatch.setattr(executors, "evaluate_child", fake)
    fake_children.clear()
    resumed = run_search(config(synthetic_csv, **kw), tmp_path / "s", resume=True).trials
    assert keys(resumed) == keys(reference) and [r["trial"] for r in resumed] == list(range(8))
    assert [r["reward"] for r in resumed] == [r["reward"] for r in reference]
    assert len(fake_children) == len({arch_key(r["architecture"]) for r in reference if not r["cached"]}) - 4  # none rerun


def test_resume_extends_a_finished_search(tmp_path, synthetic_csv, fake_children):
    reference = run_search(config(synthetic_csv, trials=10, top_k=2), tmp_path / "ref").trials
    run_search(config(synthetic_csv, trials=6, top_k=2), tmp_path / "s")
    extended = run_search(config(synthetic_csv, trials=10, top_k=2), tmp_path / "s", resume=True)
    assert keys(extended.trials) == keys(reference)
    final = json.loads((tmp_path / "s" / "final.json").read_text())
    best = next(c for c in final["candidates"] if c["best"])
    saved = json.loads((tmp_path / "s" / "best" / "config.json").read_text())["model"]["title_layers"]
    assert arch_key(saved) == arch_key(best["architecture"])


def test_a_resumed_searchs_seconds_count_its_earlier_runs(tmp_path, synthetic_csv, fake_children):
    """A fresh user's resumed search reported only the resumed part's seconds as the search's."""
    from defectnas.search.runner import CHECKPOINT
    from defectnas.storage import load_metadata

    first = run_search(config(synthetic_csv, trials=4), tmp_path / "s")
    assert first.seconds == first.run_seconds
    earlier = load_metadata(tmp_path / "s" / CHECKPOINT)["extra"]["elapsed_s"]
    assert 0 < earlier <= first.seconds
    resumed = run_search(config(synthetic_csv, trials=6), tmp_path / "s", resume=True)
    assert resumed.seconds == pytest.approx(earlier + resumed.run_seconds) and resumed.run_seconds < resumed.seconds


def test_refuses_to_mix_searches(tmp_path, synthetic_csv, fake_children):
    run_search(config(synthetic_csv, trials=2), tmp_path / "s")
    with pytest.raises(ConfigError, match="--resume"):
        run_search(config(synthetic_csv, trials=2), tmp_path / "s")
    with pytest.raises(ConfigError, match="seed: started with 1, now 2"):
        run_search(config(synthetic_csv, trials=4, seed=2), tmp_path / "s", resume=True)
    with pytest.raises(ConfigError, match="multiple of 8"):
        run_search(config(synthetic_csv, options={"d_model": 20}), tmp_path / "t")


def test_latency_weight_gives_mnasnet_reward(tmp_path, synthetic_csv, fake_children):
    trials = run_search(config(synthetic_csv, trials=4, latency_weight=0.5), tmp_path / "s").trials
    saved = json.loads((tmp_path / "s" / "search.json").read_text())
    target = saved["latency_target_ms"]
    assert target == saved["noise_floor"]["latency_ms"] == 10.0 + 5 * 4 / 4  # measured on the default: ratio 4 everywhere
    for r in trials:
        assert r["reward"] == pytest.approx(r["metric"] * (r["latency_ms"] / target) ** -0.5)


def test_latency_budget_gives_no_credit_over_it_and_bounds_best(tmp_path, synthetic_csv, fake_children):
    budget = 18.0
    cfg = config(synthetic_csv, space="serving", trials=16, latency_budget_ms=budget, top_k=3, pareto_max=3, final_seeds=1,
                 strategy="random", noise_repeats=1)
    logged: list[str] = []
    result = run_search(cfg, tmp_path / "s", log=logged.append)
    over = [r for r in result.trials if r["latency_ms"] > budget]
    assert over and all(r["reward"] == 0.0 and r["over_budget"] for r in over)
    assert all(r["reward"] == pytest.approx(r["metric"]) and not r["over_budget"] for r in result.trials if r["latency_ms"] <= budget)
    final = json.loads((tmp_path / "s" / "final.json").read_text())
    best = next(c for c in final["candidates"] if c["best"])
    assert best["latency_ms"] <= budget
    # no retrain, and no pareto/<n>/, for a child the budget rules out
    assert final["pareto"] and all(c["search_latency_ms"] <= budget for c in final["candidates"] if "pareto" in c["roles"])
    # train's default (its fake serves in 26 ms) is over the budget: said at the start and where best/ is named
    assert any(line.startswith("note: train's default serves in 26.00 ms a request here, over --latency-budget-ms 18") for line in logged)
    assert "the most accurate within --latency-budget-ms 18: train's default, at 26.00 ms, is over it" in \
        next(line for line in logged if line.startswith("best: "))


def test_an_extended_search_keeps_the_models_it_installed_as_candidates(tmp_path, synthetic_csv, fake_children, monkeypatch):
    """--resume with more trials: a new top-k architecture that retrains worse must not make best/ worse."""
    import defectnas.search.executors as executors

    from .fakes import fake_evaluate_child

    cfg = config(synthetic_csv, space="serving", trials=6, top_k=1, pareto_max=0, final_seeds=1, strategy="random")
    out = tmp_path / "s"
    run_search(cfg, out)
    first = json.loads((out / "final.json").read_text())
    best = next(c for c in first["candidates"] if c["best"])
    assert "default" not in best["roles"]

    def new_ones_retrain_badly(job, *tables):  # the new children lead at search time and fall when retrained: selection bias
        res = fake_evaluate_child(job, *tables)
        if arch_key(job["architecture"]) != arch_key(best["architecture"]):
            shift = -0.5 if job.get("save_dir") else 0.5
            res["ap_seeds"] = [a + shift for a in res["ap_seeds"]]
            res["ap"] = res["ap"] + shift
        return res

    monkeypatch.setattr(executors, "evaluate_child", new_ones_retrain_badly)
    run_search(config(synthetic_csv, space="serving", trials=24, top_k=1, pareto_max=0, final_seeds=1, strategy="random"), out,
               resume=True)
    final = json.loads((out / "final.json").read_text())
    kept = next(c for c in final["candidates"] if c["key"] == best["key"])
    assert kept["valid_metric"] == best["valid_metric"] and kept["best"]
    assert any(c["roles"] == ["top_k"] and not c["best"] for c in final["candidates"])  # the new top-1, retrained worse


def test_pareto_front_is_exported_as_model_directories(tmp_path, synthetic_csv, fake_children):
    cfg = config(synthetic_csv, space="serving", trials=20, top_k=1, pareto_max=3, final_seeds=1, strategy="random")
    result = run_search(cfg, tmp_path / "s")
    final = json.loads((tmp_path / "s" / "final.json").read_text())
    front = final["pareto"]
    assert 1 <= len(front) <= 3
    assert [e["n"] for e in front] == list(range(len(front)))
    assert [e["latency_ms"] for e in front] == sorted(e["latency_ms"] for e in front)  # pareto/0 is the fastest
    assert front[-1]["valid_metric"] == max(e["valid_metric"] for e in front)
    trained = [r for r in result.trials if not r["cached"]]
    for e in front:
        d = tmp_path / "s" / "pareto" / str(e["n"])
        stamp = json.loads((d / "architecture.json").read_text())
        assert arch_key(stamp["architecture"]) == arch_key(e["architecture"]) and (d / "config.json").exists()
        r = next(t for t in trained if arch_key(t["architecture"]) == arch_key(e["architecture"]))
        assert not any(t["latency_ms"] < r["latency_ms"] and t["metric"] > r["metric"] for t in trained)  # non-dominated
        assert r["latency_ms"] == fake_latency(r["architecture"])
    assert sorted(p.name for p in (tmp_path / "s" / "pareto").iterdir()) == [str(n) for n in range(len(front))]
    # best/ is the front's most accurate model: the same files, stored once (hard links), not a second copy
    best_key = arch_key(json.loads((tmp_path / "s" / "best" / "architecture.json").read_text())["architecture"])
    twin = next(tmp_path / "s" / "pareto" / str(e["n"]) for e in front if arch_key(e["architecture"]) == best_key)
    assert (twin / "config.json").samefile(tmp_path / "s" / "best" / "config.json")
    assert (tmp_path / "s" / "best" / "config.json").stat().st_nlink == 2


def test_select_front_skips_fast_children_far_below_the_default_but_keeps_the_most_accurate():
    from defectnas.search.final import select_front

    trained = [{"latency_ms": ms, "metric": m, "name": n} for n, (ms, m) in
               enumerate([(2.0, 0.10), (5.0, 0.30), (8.0, 0.45), (10.0, 0.50), (9.0, 0.20)])]  # the last is dominated
    names = lambda front: [r["name"] for r in front]  # noqa: E731
    assert names(select_front(trained, 3)) == [0, 2, 3]  # no floor: the fastest, the most accurate, one between
    assert names(select_front(trained, 4)) == [0, 1, 2, 3]
    assert names(select_front(trained, 4, min_metric=0.4)) == [2, 3]
    assert names(select_front(trained, 3, min_metric=0.6)) == [3]  # nothing qualifies: the most accurate still does
    assert select_front(trained, 0, min_metric=0.4) == []


def test_front_children_below_the_ratio_of_the_defaults_metric_are_not_retrained(tmp_path, synthetic_csv, fake_children):
    """--pareto-min-ratio R: a front child is retrained only if its search metric is ≥ R × train's default's
    under the same seeds (the noise floor's first repeat); the most accurate always is."""

    def front(ratio: float, out: Path) -> tuple[list[float], float]:
        cfg = config(synthetic_csv, space="serving", trials=24, top_k=1, pareto_max=4, noise_repeats=1, final_seeds=1,
                     strategy="random", pareto_min_ratio=ratio)
        result = run_search(cfg, out)
        floor = json.loads((out / "search.json").read_text())["noise_floor"]["metric_search_seeds"]
        search_metric = {arch_key(r["architecture"]): r["metric"] for r in result.trials}
        return [search_metric[arch_key(e["architecture"])] for e in json.loads((out / "final.json").read_text())["pareto"]], floor

    whole, floor = front(0.0, tmp_path / "whole")
    assert len(whole) >= 3
    ratio = (whole[0] + whole[-1]) / 2 / floor  # between the fastest front child's metric and the most accurate's
    kept, _ = front(ratio, tmp_path / "kept")
    assert kept[-1] == whole[-1] and whole[0] not in kept
    assert all(m >= ratio * floor for m in kept) and kept == [m for m in whole if m >= ratio * floor][-len(kept):]


def test_saved_models_are_timed_side_by_side_and_the_front_uses_those_times(tmp_path, synthetic_csv, fake_children, monkeypatch):
    """A candidate's retrain-time latency depends on what the machine did then: every saved model
    is timed again together (latency.json), and the front's order, dominance and speed-ups use that."""
    import defectnas.search.final as final_module

    from .fakes import fake_time_models

    timed: list[list[str]] = []

    def busy_then(dirs, valid, repeats):  # as if the default had been retrained on a busy machine: it is 2x faster now
        timed.append(sorted(dirs))
        ms = fake_time_models(dirs, valid, repeats)
        default_key = next(k for k, d in dirs.items()
                           if json.loads((Path(d) / "architecture.json").read_text())["architecture"] == ServingSpace().default_architecture())
        ms[default_key] = [v / 2 for v in ms[default_key]]
        return ms

    monkeypatch.setattr(final_module, "time_models", busy_then)
    out = tmp_path / "s"
    run_search(config(synthetic_csv, space="serving", trials=12, top_k=2, pareto_max=3, final_seeds=1, strategy="random"), out)
    final = json.loads((out / "final.json").read_text())
    rows = final["candidates"]
    assert len(timed) == 1 and timed[0] == sorted(r["key"] for r in rows)  # every candidate, once
    default = next(r for r in rows if "default" in r["roles"])
    assert default["latency_ms"] == pytest.approx(default["retrain_latency_ms"] / 2)
    assert final["latency"]["default_ms"] == default["latency_ms"]
    saved = json.loads((out / "latency.json").read_text())
    assert saved["rounds"] == 3 and set(saved["ms"]) == {r["key"] for r in rows}
    for r in rows:
        assert r["latency_ms"] == pytest.approx(float(np.median(r["latency_rounds_ms"])))
        assert r["speedup_over_default"] == pytest.approx(default["latency_ms"] / r["latency_ms"], rel=1e-3)
        assert r["latency_rounds_ms"] == saved["ms"][r["key"]]
    front = final["pareto"]
    assert [e["latency_ms"] for e in front] == sorted(e["latency_ms"] for e in front)
    by_key = {r["key"]: r for r in rows}
    for e in front:  # dominance judged on the times taken together
        assert e["dominated_by"] == [o["key"] for o in rows if o["valid_metric"] >= by_key[e["key"]]["valid_metric"]
                                     and o["latency_ms"] <= e["latency_ms"] and o["key"] != e["key"]
                                     and (o["valid_metric"] > by_key[e["key"]]["valid_metric"] or o["latency_ms"] < e["latency_ms"])]
    # train's default, retrained as the candidates were, is a model directory beside best/
    stamp = json.loads((out / "default" / "architecture.json").read_text())
    assert stamp["key"] == default["key"] and (out / "default" / "splits.json").exists() and final["default_dir"] == str(out / "default")

    # a resumed finished search reuses the times
    run_search(config(synthetic_csv, space="serving", trials=12, top_k=2, pareto_max=3, final_seeds=1, strategy="random"), out,
               resume=True)
    assert len(timed) == 1 and json.loads((out / "final.json").read_text())["latency"] == final["latency"]


def test_without_a_test_split_the_saved_models_are_timed_without_a_default(tmp_path, synthetic_csv, fake_children):
    """train's default is retrained only as the paired test's reference: no test split, no default/ and no speed-ups."""
    out = tmp_path / "s"
    run_search(config(synthetic_csv, space="serving", trials=6, top_k=1, pareto_max=2, final_seeds=1, test_frac=0.0), out)
    final = json.loads((out / "final.json").read_text())
    assert final["latency"]["default_ms"] is None and final["default_dir"] is None and not (out / "default").exists()
    assert all(r["speedup_over_default"] is None and len(r["latency_rounds_ms"]) == 3 for r in final["candidates"])
    assert (out / "best" / "splits.json").exists()


def test_budget_minutes_stops_sampling_then_retrains(tmp_path, synthetic_csv, fake_children):
    result = run_search(config(synthetic_csv, trials=50, budget_minutes=1e-9, top_k=1), tmp_path / "s")
    assert len(result.trials) == 0 or len(result.trials) < 50
    result = run_search(config(synthetic_csv, trials=6, budget_minutes=60, top_k=1), tmp_path / "t")
    assert len(result.trials) == 6 and (tmp_path / "t" / "best").exists()


def test_budget_reserves_the_retrains_estimate(tmp_path, fake_timing, synthetic_csv, monkeypatch):
    """Sampling stops when what is left of the budget only covers the next batch and the retrains of
    today's candidates (each candidate's child seconds × the retrain's pairs × epochs × seeds ratio),
    so the budget bounds the whole search; final.json records the estimate."""
    import defectnas.search.executors as executors

    from .fakes import fake_evaluate_child

    monkeypatch.setattr(executors, "evaluate_child", lambda job, *a: {**fake_evaluate_child(job, *a), "seconds": 5.0})
    # every child "took" 5 s; retrain = 2 epochs / 1 × 2 seeds / 2 × all pairs / all pairs = 2 children's time, for
    # train's default and the top-1: 20 s reserved, + 5 s for the next batch of one
    tight = run_search(config(synthetic_csv, trials=8, top_k=1, final_epochs=2, budget_minutes=20 / 60), tmp_path / "tight")
    assert len(tight.trials) == 1  # elapsed ≈ 0 s, but 0 + 5 + 20 > 20
    assert tight.final["retrain"]["estimate_s"] == pytest.approx(20.0)
    roomy = run_search(config(synthetic_csv, trials=8, top_k=1, final_epochs=2, budget_minutes=1.0), tmp_path / "roomy")
    assert len(roomy.trials) == 8  # 0 + 5 + 20 < 60 at every step


def test_children_that_fit_takes_the_largest_batch_the_budget_has_room_for():
    from defectnas.search.runner import children_that_fit

    reserve = lambda m: 20.0  # noqa: E731
    assert children_that_fit(4, 45.0, 5.0, 1, reserve) == 4  # 20 + 20 ≤ 45
    assert children_that_fit(4, 32.0, 5.0, 1, reserve) == 2  # 10 + 20 ≤ 32 < 15 + 20
    assert children_that_fit(4, 24.0, 5.0, 1, reserve) == 0
    assert children_that_fit(4, 25.0, 5.0, 2, reserve) == 2 and children_that_fit(4, 30.0, 5.0, 2, reserve) == 4  # ⌈m / 2⌉ rounds
    assert children_that_fit(4, 40.0, 5.0, 1, lambda m: 20.0 + 4 * m) == 2  # each child may add a candidate to retrain
    assert children_that_fit(4, 0.0, 5.0, 1, reserve, logged=3) == 3  # a killed batch's logged children cost nothing: kept
    assert children_that_fit(4, 32.0, 5.0, 1, reserve, logged=1) == 2 and children_that_fit(2, 0.0, 5.0, 1, reserve, logged=3) == 2


class FakeClock:
    """Stands for the runner's ``time``: fake children advance it by the seconds they report."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def clock_children(monkeypatch, seconds: float = 5.0) -> FakeClock:
    """The runner on a :class:`FakeClock`, and fake children that each advance it by ``seconds``."""
    import defectnas.search.executors as executors
    import defectnas.search.runner as runner

    from .fakes import fake_evaluate_child

    clock = FakeClock()
    monkeypatch.setattr(runner, "time", clock)

    def child(job, *a):
        clock.now += seconds
        return {**fake_evaluate_child(job, *a), "seconds": seconds}

    monkeypatch.setattr(executors, "evaluate_child", child)
    return clock


@pytest.mark.parametrize("budget_s, sampled", [(39.0, 4), (47.0, 5), (52.0, 6)])
def test_a_smaller_last_batch_uses_what_is_left_of_the_budget(tmp_path, fake_timing, synthetic_csv, monkeypatch, budget_s, sampled):
    """Batches of 4 children of 5 s; after the first, retraining the default and the top-1 is reserved
    (20 s): the next batch has room for as many children as fit in the rest (it once stopped at 4 whenever
    a whole batch did not fit, leaving up to 3 children's minutes of the budget unused)."""
    clock_children(monkeypatch)
    said: list[str] = []
    result = run_search(config(synthetic_csv, trials=12, batch_size=4, top_k=1, final_epochs=2, budget_minutes=budget_s / 60),
                        tmp_path / "s", log=said.append)
    assert len(result.trials) == sampled  # 20 s in, then 20 + 5m + 20 ≤ budget: m = 0, 1, 2
    assert [r["trial"] for r in result.trials] == list(range(sampled))
    if sampled > 4:
        assert any(f"this batch has {sampled - 4} of 4 children" in line for line in said)
        _, meta = load_tensors(tmp_path / "s" / "controller.safetensors")
        assert meta["extra"]["next_trial"] == sampled and meta["step"] == 2  # the small batch was a step of its own
    assert any(f"sampling stops after {sampled} trials" in line for line in said)


def test_a_run_refused_after_its_noise_floor_counts_the_floors_seconds_on_resume(tmp_path, fake_timing, synthetic_csv, monkeypatch):
    """A first run whose budget only fitted the floor saved no checkpoint: its floor's seconds were not
    counted by the resumed run, whose seconds and budget then left out minutes really spent (helper, session 24)."""
    clock_children(monkeypatch)
    first = run_search(config(synthetic_csv, trials=2, noise_repeats=2, budget_minutes=12 / 60), tmp_path / "s")
    assert first.trials == [] and first.seconds == pytest.approx(10.0)  # the floor's 2 repeats, then refused
    resumed = run_search(config(synthetic_csv, trials=2, noise_repeats=2, budget_minutes=0), tmp_path / "s", resume=True)
    assert len(resumed.trials) == 2 and resumed.run_seconds == pytest.approx(10.0)  # the 2 children: the floor is not rerun
    assert resumed.seconds == pytest.approx(20.0)  # ...and the first run's floor is counted


def test_before_the_first_batch_the_budget_reserves_its_candidates_at_the_floors_child_seconds(tmp_path, fake_timing, synthetic_csv, monkeypatch):
    """Nothing sampled yet, but the noise floor timed the default's child: the first batch's children
    are counted as the candidates they will become, so a budget too small for one batch and its
    retrains samples nothing (it once ran the batch, its reserve being 0, and overran)."""
    import defectnas.search.executors as executors

    from .fakes import fake_evaluate_child

    monkeypatch.setattr(executors, "evaluate_child", lambda job, *a: {**fake_evaluate_child(job, *a), "seconds": 5.0})
    # floor child 5 s; retrain = 2 children's time for the default and for the one candidate the batch of one adds:
    # 20 s reserved, + 5 s for the batch: 25 s
    small = run_search(config(synthetic_csv, trials=8, top_k=1, final_epochs=2, noise_repeats=1, budget_minutes=24 / 60), tmp_path / "small")
    assert len(small.trials) == 0
    enough = run_search(config(synthetic_csv, trials=8, top_k=1, final_epochs=2, noise_repeats=1, budget_minutes=26 / 60), tmp_path / "enough")
    assert len(enough.trials) >= 1


def test_the_retrains_estimate_counts_the_frozen_pass_over_texts_no_child_saw(synthetic_csv, tmp_path):
    """A child's seconds leave out MiniLM's frozen pass (the noise floor paid it for the children's
    texts); the retrains pass the final tables' other texts once, at the floor's measured rate (on Home
    Depot `train`'s default retrained in 135 s where 3 × its 11 s child had been counted)."""
    import defectnas.search.final as final
    from defectnas.search.runner import build_space, prepare_tables
    from defectnas.search.trials import TrialLog

    cfg = config(synthetic_csv, child_rows=40, top_k=1, final_epochs=2)
    tables = prepare_tables(cfg)
    seen = {t for n in ("child_train", "child_valid") for c in ("query", "title") for t in tables[n][c]}
    new = {t for n in ("train", "valid", "test") for c in ("query", "title") for t in tables[n][c]} - seen
    assert new  # the children train on 40 of the training pairs
    floor = {"child_seconds": 5.0, "latency_ms": 0.0, "frozen_s_per_text": 0.01}
    assert final.frozen_pass_estimate_s(tables, floor, warm=final.CHILD_TABLES) == pytest.approx(0.01 * len(new))
    assert final.frozen_pass_estimate_s(tables, {"child_seconds": 5.0}, warm=final.CHILD_TABLES) == 0.0  # not measured (an earlier version's floor)
    empty = TrialLog(tmp_path / "none.jsonl")
    space = build_space(cfg)
    with_pass = final.retrain_estimate_s(cfg, space, empty, tables, floor, upcoming=1)
    without = final.retrain_estimate_s(cfg, space, empty, tables, {**floor, "frozen_s_per_text": None}, upcoming=1)
    assert with_pass - without == pytest.approx(0.01 * len(new))


def test_the_budget_reserves_timing_the_saved_models_side_by_side(tmp_path, synthetic_csv, monkeypatch):
    """The end of a search times every saved model in interleaved rounds: per model a fixed load-and-cache
    cost plus its requests at its child latency; the retrains' reserve includes it (the student too)."""
    import defectnas.search.executors as executors
    import defectnas.search.final as final
    from defectnas.search.runner import build_space, prepare_tables
    from defectnas.search.trials import TrialLog

    from .fakes import fake_evaluate_child

    cfg = config(synthetic_csv, latency_repeats=10)
    requests = final.LATENCY_ROUNDS * (3 + 30)  # at least 30 timed after 3 warm-up, in each round
    assert final.timing_estimate_s(cfg, [10.0, 20.0]) == pytest.approx(2 * final.TIMING_S_PER_MODEL + requests * 0.030)
    assert final.timing_estimate_s(cfg, []) == 0.0
    # before sampling: the floor's child seconds and latency stand for every candidate to be
    monkeypatch.setattr(executors, "evaluate_child", lambda job, *a: {**fake_evaluate_child(job, *a), "seconds": 5.0})
    on = config(synthetic_csv, top_k=1, final_epochs=2, distill_query=0)
    tables, space = prepare_tables(on), build_space(on)
    floor = {"child_seconds": 5.0, "latency_ms": 12.0}
    empty = TrialLog(tmp_path / "none.jsonl")
    with_timing = final.retrain_estimate_s(on, space, empty, tables, floor, upcoming=1)
    monkeypatch.setattr(final, "timing_estimate_s", lambda cfg, latencies_ms: 0.0)
    without = final.retrain_estimate_s(on, space, empty, tables, floor, upcoming=1)
    assert with_timing - without == pytest.approx(2 * (final.TIMING_S_PER_MODEL + requests * 0.012))  # the default and the batch's one


def test_split_seed_keeps_the_split_while_the_search_seed_changes(synthetic_csv, tmp_path, monkeypatch):
    from defectnas.cli import main
    from defectnas.search.runner import prepare_tables

    def test_queries(**kw):
        return set(prepare_tables(config(synthetic_csv, **kw))["test"]["query"])

    assert test_queries(seed=1, split_seed=0) == test_queries(seed=0)
    assert test_queries(seed=1) != test_queries(seed=0)  # without it, --seed seeds the split too (as it always did)
    assert config(synthetic_csv, seed=3).data_seed == 3 and config(synthetic_csv, seed=3, split_seed=0).data_seed == 0
    seen = []
    monkeypatch.setattr("defectnas.search.runner.run_search", lambda cfg, *a, **k: seen.append(cfg) or (_ for _ in ()).throw(KeyboardInterrupt))
    main(["search", "--data", str(synthetic_csv), "--out", str(tmp_path / "s"), "--seed", "2", "--split-seed", "0", "--quiet"])
    assert seen[0].seed == 2 and seen[0].data_seed == 0  # the flag reaches the search (stopped there)


def test_the_cli_says_when_the_budget_left_no_child_and_exits_2(tmp_path, fake_timing, synthetic_csv, monkeypatch, capsys):
    """A search whose budget trains no child saves no model: the command must not look like a success."""
    import defectnas.search.executors as executors
    from defectnas.cli import main

    from .fakes import fake_evaluate_child

    monkeypatch.setattr(executors, "evaluate_child", lambda job, *a: {**fake_evaluate_child(job, *a), "seconds": 5.0})
    code = main(["search", "--data", str(synthetic_csv), "--out", str(tmp_path / "s"), "--space", "seed", "--trials", "4",
                 "--noise-repeats", "1", "--distill-query", "0", "--budget-minutes", str(10 / 60), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --budget-minutes 0.1") and "nothing saved" in err[-1]
    assert not (tmp_path / "s" / "best").exists()


def test_a_search_on_few_queries_says_its_differences_are_mostly_noise(tmp_path, synthetic_csv, fake_children):
    said: list[str] = []
    run_search(config(synthetic_csv, trials=1), tmp_path / "s", log=said.append)
    notes = [m for m in said if m.startswith("note: the validation split has")]
    assert len(notes) == 1 and "mostly noise" in notes[0] and "test split has" in notes[0]


def test_retrain_budget_defaults_to_a_cpu_sized_one():
    cpu = SearchConfig(data="x")
    assert (cpu.final_rows, cpu.final_epochs) == (12000, 1)
    gpu = SearchConfig(data="x", options={"device": "cuda"})
    assert (gpu.final_rows, gpu.final_epochs) == (0, 0)  # all pairs, the model's epochs
    assert (SearchConfig(data="x", final_rows=0, final_epochs=0).final_rows, SearchConfig(data="x", final_epochs=3).final_epochs) == (0, 3)
    with pytest.raises(ConfigError, match="final_rows"):
        SearchConfig(data="x", final_rows=-2)
    # what a search saved is concrete, so a resume on another machine does not change it
    assert SearchConfig.from_dict(cpu.to_dict()).final_rows == 12000


def test_random_strategy_leaves_the_controller_alone(tmp_path, synthetic_csv, fake_children):
    rl = run_search(config(synthetic_csv, trials=12), tmp_path / "rl").trials
    rnd = run_search(config(synthetic_csv, trials=12, strategy="random"), tmp_path / "rnd").trials
    assert keys(rl) != keys(rnd)
    tensors, meta = load_tensors(tmp_path / "rnd" / "controller.safetensors")
    assert meta["step"] == 12 and not any(k.startswith("optimizer.") for k in tensors)


def test_sigkill_and_resume(tmp_path, synthetic_csv):
    """A search process is SIGKILLed mid-way; --resume finishes it exactly as if it had not been, under
    every strategy (the three strategies' processes run side by side)."""
    import defectnas.search.executors as executors
    import defectnas.search.final as final
    from .fakes import fake_evaluate_child, fake_time_models

    script = Path(__file__).with_name("fakes.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(script.parent), os.environ.get("PYTHONPATH", "")])}
    trials = 10

    def launch(strategy: str, *extra: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(synthetic_csv), str(tmp_path / strategy), str(trials), strategy, *extra],
                                env=env, **kw)

    running = {strategy: launch(strategy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for strategy in STRATEGIES}
    deadline = time.time() + 120
    try:
        while running and time.time() < deadline:  # kill each once it logged 3 trials, none finished
            for strategy, proc in list(running.items()):
                assert proc.poll() is None, f"{strategy}: the search finished before it could be killed"
                log = tmp_path / strategy / "trials.jsonl"
                if log.exists() and len(log.read_text().splitlines()) >= 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    del running[strategy]
            time.sleep(0.02)
    finally:  # no process outlives a failed check
        for proc in running.values():
            proc.kill()
    assert not running, "no search logged 3 trials in time"
    logged = {}
    for strategy in STRATEGIES:
        logged[strategy] = {r["trial"] for r in read_trials(tmp_path / strategy)}
        assert 3 <= len(logged[strategy]) < trials, strategy

    logs = {strategy: (tmp_path / f"{strategy}.log").open("w") for strategy in STRATEGIES}  # files: a full pipe would block them
    resumed = {strategy: launch(strategy, "--resume", stdout=logs[strategy], stderr=subprocess.STDOUT) for strategy in STRATEGIES}
    with pytest.MonkeyPatch.context() as patch:  # the uninterrupted references, in this process, while the resumed ones run
        patch.setattr(executors, "evaluate_child", fake_evaluate_child)
        patch.setattr(final, "time_models", fake_time_models)
        for strategy in STRATEGIES:
            run_search(kill_test_config(synthetic_csv, trials, strategy), tmp_path / f"ref-{strategy}")
    for strategy, proc in resumed.items():
        proc.wait(timeout=180)
        logs[strategy].close()
        assert proc.returncode == 0, f"{strategy}: {(tmp_path / f'{strategy}.log').read_text()}"
        out, ref = tmp_path / strategy, tmp_path / f"ref-{strategy}"
        got, want = read_trials(out), read_trials(ref)
        assert [r["trial"] for r in got] == list(range(trials)), strategy  # no gap, no duplicate, in order
        assert keys(got) == keys(want), strategy
        assert [r["reward"] for r in got] == [r["reward"] for r in want], strategy
        floor = lambda d: [json.loads(l)["metric"] for l in (d / "noise.jsonl").read_text().splitlines()]  # noqa: E731
        assert floor(out) == floor(ref), strategy  # the noise floor: measured once, not repeated
        assert (out / "best" / "config.json").exists() and (out / "final.json").exists(), strategy
        # the resume's line says where the next batch starts and which of its trials the log already holds
        said = (tmp_path / f"{strategy}.log").read_text()
        line = re.search(r"resuming: (\d+) trials logged, strategy at step \d+; its next batch starts at trial (\d+)"
                         r"(?: \(trials? ([\d, ]+) of it logged: reused, not rerun\))?", said)
        assert line and int(line[1]) == len(logged[strategy]), said
        start, reused = int(line[2]), {int(x) for x in (line[3] or "").split(", ") if x}
        assert reused == {t for t in logged[strategy] if t >= start}, said
        trained = {int(x) for x in re.findall(r"^trial (\d+): reward", said, flags=re.M)}
        assert trained and min(trained) >= start and not trained & reused, said  # none of those reused trained again


def test_cli_resume_rules(tmp_path, synthetic_csv, fake_children, capsys):
    from defectnas.cli import main

    config_file = tmp_path / "base.json"
    config_file.write_text(json.dumps({"d_model": 16}))
    out = tmp_path / "s"
    argv = ["search", "--data", str(synthetic_csv), "--out", str(out), "--trials", "3", "--top-k", "0", "--pareto-max", "0",
            "--noise-repeats", "0", "--space", "seed", "--config", str(config_file), "--quiet"]
    assert main(argv + ["--seed", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 3
    assert main(argv) == 2  # not without --resume
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--resume" in err and len(err.splitlines()) == 1
    assert main(argv + ["--resume", "--child-epochs", "3"]) == 2  # the budget is fixed at the start
    assert "child_epochs: started with 1, now 3" in capsys.readouterr().err
    # --seed left out: the search's own seed (4) goes on; --trials may grow
    assert main(["search", "--data", str(synthetic_csv), "--out", str(out), "--trials", "5", "--resume", "--quiet"]) == 0
    capsys.readouterr()
    assert [r["trial"] for r in read_trials(out)] == [0, 1, 2, 3, 4]
    assert json.loads((out / "search.json").read_text())["seed"] == 4


def test_crash_during_retrain_resumes_the_missing_ones(tmp_path, synthetic_csv, fake_children, monkeypatch):
    import defectnas.search.executors as executors

    fake = executors.evaluate_child

    def dies_on_second_retrain(job, *args):
        if job.get("save_dir") and sum(1 for j in fake_children if j.get("save_dir")) == 1:
            raise RuntimeError("killed")
        return fake(job, *args)

    monkeypatch.setattr(executors, "evaluate_child", dies_on_second_retrain)
    with pytest.raises(RuntimeError, match="killed"):
        run_search(config(synthetic_csv, top_k=3, final_seeds=1), tmp_path / "s")
    logged = len((tmp_path / "s" / "retrain.jsonl").read_text().splitlines())
    assert logged == 1  # train's default (kept as default/); the first top-k died
    monkeypatch.setattr(executors, "evaluate_child", fake)
    fake_children.clear()
    result = run_search(config(synthetic_csv, top_k=3, final_seeds=1), tmp_path / "s", resume=True)
    assert [bool(j.get("save_dir")) for j in fake_children] == [True, True, True]  # no child, the three top-k retrains
    assert len(result.top_k) == 3 and len((tmp_path / "s" / "retrain.jsonl").read_text().splitlines()) == 4


def test_fake_child_sanity():
    assert fake_f1([{"mixer": "glu", "heads": 1, "ffn": "ffn", "ratio": 16}]) > fake_f1([{"mixer": "attention", "heads": 4, "ffn": "ffn", "ratio": 4}])


def test_the_default_stays_the_reference_when_the_space_leaves_it_out(tmp_path, synthetic_csv, fake_children):
    """space_options without train's default (6 query layers): the noise floor and the paired test still use it."""
    cfg = config(synthetic_csv, space="serving", trials=4, noise_repeats=1, top_k=1, final_seeds=1,
                 space_options={"query_layers": [2, 3], "matching": [False]})
    result = run_search(cfg, tmp_path / "s")
    assert all(r["architecture"]["query_layers"] in (2, 3) and not r["architecture"]["matching"] for r in result.trials)
    assert fake_children[0]["architecture"]["query_layers"] == 6  # the noise floor: train's default
    final = json.loads((tmp_path / "s" / "final.json").read_text())
    assert any("default" in c["roles"] and c["architecture"]["query_layers"] == 6 for c in final["candidates"])


@pytest.mark.parametrize("field, value, message", [
    ("trials", 0, "--trials (trials) must be at least 1, got 0"),
    ("child_seeds", 0, "--child-seeds (child_seeds) must be at least 1, got 0"),
    ("workers", 0, "--workers (workers) must be at least 1, got 0"),
    ("budget_minutes", -1.0, "--budget-minutes (budget_minutes) must not be negative, got -1"),
    ("top_k", -2, "--top-k (top_k) must not be negative, got -2"),
    ("space", "huge", "--space (space) must be one of serving, seed, got 'huge'"),  # from --config JSON (the flag checks its own)
    ("strategy", "annealing", "--strategy (strategy) must be one of rl, random, evolution, got 'annealing'"),
    ("reward_metric", "auc", "--reward-metric (reward_metric) must be one of ap, f1, got 'auc'"),
])
def test_a_bad_setting_is_named_by_its_flag(field, value, message):
    """One line naming the flag that was wrong (it once listed five fields by their dataclass names)."""
    from defectnas.errors import ConfigError
    from defectnas.search.config import SearchConfig

    with pytest.raises(ConfigError) as e:
        SearchConfig(data="x", **{field: value})
    assert str(e.value) == message


def test_the_space_names_a_config_accepts_are_the_registrys():
    """search/config.py names the spaces without importing torch; the registry is what builds them."""
    from defectnas.search.config import SPACE_NAMES
    from defectnas.search.space import SPACES

    assert sorted(SPACE_NAMES) == SPACES.names()


def test_the_floors_child_seconds_leave_out_the_first_repeats_frozen_pass(synthetic_csv):
    """The first noise-floor repeat passes every text through the frozen layers once (82 s against 11 s a
    child on Home Depot): counted as a child's cost, it made the budget refuse small searches."""
    from defectnas.search.runner import summarize_floor

    cfg = config(synthetic_csv, child_seeds=2)
    repeat = lambda n, s: {"repeat": n, "seeds": [n, n + 1], "metric": 0.1, "reward": 0.1, "spread": 0.0, "ap": 0.1,  # noqa: E731
                           "ap_seeds": [0.1, 0.1], "f1_seeds": [0.2, 0.2], "latency_ms": 5.0, "seconds": s}
    assert summarize_floor(cfg, [], [repeat(0, 82.0), repeat(1, 11.0), repeat(2, 13.0)])["child_seconds"] == 12.0
    assert summarize_floor(cfg, [], [repeat(0, 82.0)])["child_seconds"] == 82.0  # alone, and a log without frozen_s
    alone = {**repeat(0, 82.0), "frozen_s": 70.5}  # --noise-repeats 1: the repeat, less its frozen pass
    assert summarize_floor(cfg, [], [alone])["child_seconds"] == 11.5
    assert summarize_floor(cfg, [], [alone, {**repeat(1, 11.0), "frozen_s": 0.5}])["child_seconds"] == 10.5
    assert summarize_floor(cfg, [], [{**alone, "frozen_texts": 14100}])["frozen_s_per_text"] == pytest.approx(0.005)
    assert summarize_floor(cfg, [], [alone])["frozen_s_per_text"] is None  # not measured (an earlier version's log)



def test_a_resume_says_what_it_reuses(tmp_path, synthetic_csv, fake_children):
    """--resume on a folder without a search says it starts one; a resumed search says the noise floor
    and the logged trials are reused, not rerun."""
    said: list[str] = []
    run_search(config(synthetic_csv, trials=2, top_k=0, pareto_max=0, noise_repeats=2), tmp_path / "s", resume=True, log=said.append)
    assert any("holds no search yet" in m and "starting a new one" in m for m in said)
    said.clear()
    ran = len(fake_children)
    run_search(config(synthetic_csv, trials=4, top_k=0, pareto_max=0, noise_repeats=2), tmp_path / "s", resume=True, log=said.append)
    assert "noise floor: 2 of 2 repeats already in noise.jsonl, not rerun" in said
    assert any(m.startswith("resuming: 2 trials logged") for m in said)
    assert len(fake_children) - ran == 2  # only the two new trials trained


@pytest.mark.parametrize("case", ["missing data", "unreachable ray",
                                  # auto would find another xdist worker's local Ray: run in the Ray tests' worker, in turn
                                  pytest.param("no ray cluster", marks=pytest.mark.xdist_group("ray")),
                                  "layers", "bad config space", "serving options to the seed space"])
def test_a_refused_start_leaves_no_empty_out_folder(tmp_path, synthetic_csv, case, capsys):
    """A fresh user's mistyped start left an empty --out behind (which the next try then had to pick
    around); every refusal before the first file is written now leaves nothing, in one line."""
    from defectnas.cli import main

    argv = ["search", "--data", str(synthetic_csv), "--out", str(tmp_path / "s"), "--quiet"]
    if case == "missing data":
        argv[2] = str(tmp_path / "nope.csv")
    elif case == "unreachable ray":
        pytest.importorskip("ray")
        argv += ["--ray-address", "127.0.0.1:1"]  # refused at once, not after ray.init's minutes of retries
    elif case == "no ray cluster":  # auto with nothing running: Ray's ConnectionError came out as a traceback
        ray = pytest.importorskip("ray")
        if ray.is_initialized():
            pytest.skip("a Ray of this process would be reused")
        argv += ["--ray-address", "auto"]
    elif case == "serving options to the seed space":  # a TypeError traceback from the seed space's constructor
        argv += ["--space", "seed", "--space-options", '{"query_layers": [1]}']
    elif case == "layers":
        argv += ["--distill-query", "9"]
    else:
        (tmp_path / "c.json").write_text('{"d_model": 16}')
        argv += ["--config", str(tmp_path / "c.json"), "--reward-metric", "f1", "--space-options", '{"no_such_option": [1]}']
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    assert not (tmp_path / "s").exists()


def test_an_out_that_is_a_file_is_refused_before_the_data_is_read(tmp_path, synthetic_csv, capsys):
    from defectnas.cli import main

    (tmp_path / "afile").write_text("mine")
    assert main(["search", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --out {tmp_path / 'afile'} is a file; give a folder (a new one, or a search's to --resume it)"]
    assert (tmp_path / "afile").read_text() == "mine"


def test_quiet_resume_of_a_folder_without_a_search_still_warns(tmp_path, synthetic_csv, fake_children, capsys):
    """A mistyped --out with --resume --quiet started a new search without a word."""
    from defectnas.cli import main

    argv = ["search", "--data", str(synthetic_csv), "--out", str(tmp_path / "typo"), "--trials", "2", "--top-k", "0", "--pareto-max", "0",
            "--noise-repeats", "0", "--space", "seed", "--resume", "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: --resume: {tmp_path / 'typo'} holds no search yet (search.json missing): starting a new one"]


def test_a_budget_too_small_for_one_child_says_how_to_fit(tmp_path, synthetic_csv, fake_children, capsys):
    from defectnas.cli import main

    argv = ["search", "--data", str(synthetic_csv), "--out", str(tmp_path / "s"), "--trials", "4", "--noise-repeats", "1",
            "--space", "seed", "--budget-minutes", "0.000001", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --budget-minutes 1e-06 left no time to train a single child")
    assert "with --resume the floor is kept" in err and "--top-k 1 --pareto-max 1 --distill-query 0" in err
    assert (tmp_path / "s" / "noise.jsonl").exists()  # what it measured is kept for the --resume
