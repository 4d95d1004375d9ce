"""Real searches on a slice of the shared Home Depot sample: CLI, local worker processes, Ray."""

from __future__ import annotations

import json

import pytest

from defectnas import DefectClassifier
from defectnas.cli import main
from defectnas.search.config import SearchConfig
from defectnas.search.runner import run_search

from .conftest import TINY_CHILD, read_trials

CONTRACT_KEYS = {"precision", "recall", "f1", "threshold", "n", "defect_rate"}


@pytest.mark.slow
def test_search_command_end_to_end(tmp_path, search_sample, tiny_child_config, capsys):
    out = tmp_path / "search"
    argv = ["search", "--data", str(search_sample), "--out", str(out), "--trials", "3", "--top-k", "2",
            "--child-rows", "400", "--final-rows", "400", "--final-epochs", "1", "--latency-weight", "0.07", "--config", str(tiny_child_config),
            "--quiet", "--seed", "0"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 3 and summary["best_dir"] == str(out / "best")

    trials = read_trials(out)
    assert [r["trial"] for r in trials] == [0, 1, 2]
    for r in trials:
        assert 0.0 <= r["f1"] <= 1.0 and r["latency_ms"] > 0 and r["params"] > 0
        assert r["cached"] or r["seconds"] > 0
    target = json.loads((out / "search.json").read_text())["latency_target_ms"]
    assert target > 0 and (out / "reference.json").exists()
    assert trials[0]["reward"] == pytest.approx(trials[0]["f1"] * (trials[0]["latency_ms"] / target) ** -0.07)
    for name in ("rewards.png", "pareto.png", "controller.safetensors"):
        assert (out / name).stat().st_size > 0
    top = json.loads((out / "top_k.json").read_text())
    assert len(top) == 2 and sum(e["best"] for e in top) == 1 and set(top[0]["test"]) == CONTRACT_KEYS

    # best/ is an ordinary model directory: load, evaluate, same architecture as its top_k entry
    best = next(e for e in top if e["best"])
    clf = DefectClassifier.load(out / "best")
    assert [vars(s) for s in clf.model_config_.title_layers] == best["architecture"]
    assert set(json.loads((out / "best" / "metrics.json").read_text())) == CONTRACT_KEYS
    assert main(["evaluate", "--model", str(out / "best"), "--data", str(search_sample), "--quiet"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == CONTRACT_KEYS

    # resuming a finished search does nothing again
    assert main(argv + ["--resume"]) == 0
    capsys.readouterr()
    assert read_trials(out) == trials


@pytest.mark.slow
def test_children_in_worker_processes(tmp_path, search_sample):
    cfg = SearchConfig(data=str(search_sample), trials=2, top_k=0, workers=2, child_rows=300, seed=0,
                       options=dict(TINY_CHILD))
    result = run_search(cfg, tmp_path / "s")
    assert [r["trial"] for r in result.trials] == [0, 1]
    assert [r["step"] for r in result.trials] == [0, 0]  # one batch of two: one controller step
    assert json.loads((tmp_path / "s" / "search.json").read_text())["batch_size"] == 2
    assert all(0.0 <= r["f1"] <= 1.0 and r["latency_ms"] > 0 for r in result.trials)


@pytest.mark.slow
def test_children_as_ray_tasks(tmp_path, search_sample):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = SearchConfig(data=str(search_sample), trials=3, top_k=1, ray_address="auto", child_rows=300,
                           final_rows=300, final_epochs=1, seed=0, options=dict(TINY_CHILD))
        result = run_search(cfg, tmp_path / "s")
    finally:
        ray.shutdown()
    assert [r["trial"] for r in result.trials] == [0, 1, 2]
    assert json.loads((tmp_path / "s" / "search.json").read_text())["batch_size"] == 2  # the local Ray's CPUs
    assert [r["step"] for r in result.trials] == [0, 0, 1]
    assert (tmp_path / "s" / "best" / "config.json").exists() and len(result.top_k) == 1
