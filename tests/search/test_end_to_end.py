"""Real searches on a slice of the shared Home Depot sample: CLI, both spaces, worker processes, Ray."""

from __future__ import annotations

import json

import pytest

from defectnas import DefectClassifier
from defectnas.cli import main
from defectnas.search.config import SearchConfig
from defectnas.search.runner import run_search
from defectnas.search.space import ServingSpace, arch_key

from .conftest import TINY_CHILD, read_trials

CONTRACT_KEYS = {"precision", "recall", "f1", "threshold", "n", "defect_rate", "average_precision", "ece", "brier",
                 "precision_low", "precision_high", "recall_low", "recall_high"}


@pytest.mark.slow
def test_serving_search_end_to_end(tmp_path, search_sample, capsys):
    """The default space on real MiniLM layers: noise floor, children under K seeds, the front under
    pareto/<n>/ as model directories evaluate/predict accept, best/, the paired test."""
    out = tmp_path / "search"
    argv = ["search", "--data", str(search_sample), "--out", str(out), "--trials", "3", "--top-k", "1", "--pareto-max", "1",
            "--child-rows", "300", "--final-rows", "300", "--final-epochs", "1", "--final-seeds", "1", "--child-seeds", "2",
            "--noise-repeats", "2", "--child-epochs", "1", "--distill-epochs", "1", "--quiet", "--seed", "0",
            "--space-options", '{"query_layers": [3, 6]}']  # a query tower best/ can be distilled from
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 3 and summary["best_dir"] == str(out / "best") and summary["report"] == str(out / "report.html")
    assert summary["noise_floor"]["repeats"] == 2 and summary["noise_floor"]["metric"] == "ap"
    floor = [json.loads(line) for line in (out / "noise.jsonl").read_text().splitlines()]
    assert 0 < floor[0]["frozen_s"] < floor[0]["seconds"] and floor[1]["frozen_s"] < floor[0]["frozen_s"]  # the first pays the pass
    assert floor[0]["frozen_texts"] > floor[1]["frozen_texts"] >= 0
    saved_floor = json.loads((out / "search.json").read_text())["noise_floor"]
    assert saved_floor["frozen_s_per_text"] == pytest.approx(floor[0]["frozen_s"] / floor[0]["frozen_texts"])
    assert summary["paired_test"]["queries"] > 0

    space = ServingSpace()
    for r in read_trials(out):
        assert 0.0 <= r["ap"] <= 1.0 and 0.0 <= r["f1"] <= 1.0 and r["latency_ms"] > 0 and r["params"] > 0
        assert len(r["ap_seeds"]) == 2 and space.canonical(r["architecture"]) == r["architecture"]
    for name in ("rewards.png", "pareto.png", "noise.png", "final.png", "controller.safetensors", "final.json", "top_k.json", "report.html"):
        assert (out / name).stat().st_size > 0
    final = json.loads((out / "final.json").read_text())
    assert 1 <= len(final["pareto"]) <= 1 + 1  # --pareto-max 1, and the distilled student when no candidate beats it
    compared = 0
    for entry in final["pareto"]:  # each front model: an ordinary model directory with the searched architecture
        d = out / "pareto" / str(entry["n"])
        clf = DefectClassifier.load(d)
        assert space.to_options(entry["architecture"])["query_backbone_layers"] == clf.model_config_.query_backbone_layers
        assert set(json.loads((d / "metrics.json").read_text())) >= CONTRACT_KEYS
        assert main(["evaluate", "--model", str(d), "--data", str(search_sample), "--split", "test", "--quiet"]) == 0
        scored = json.loads(capsys.readouterr().out)  # on the search's own test queries (splits.json beside the model)
        assert set(scored) == CONTRACT_KEYS
        retrained = [c for c in final["candidates"] if c["key"] == entry["key"]]  # saved: the first retrain seed's model
        if retrained:
            assert scored["average_precision"] == pytest.approx(retrained[0]["test"][0]["average_precision"], abs=1e-4)
            compared += 1
    assert compared >= 1
    timed = json.loads((out / "latency.json").read_text())["ms"]  # every saved model, served side by side
    assert set(timed) == {c["key"] for c in final["candidates"]} and all(len(v) == 3 and min(v) > 0 for v in timed.values())
    assert DefectClassifier.load(out / "default").model_config_.query_backbone_layers == 6  # train's default, retrained
    best = next(c for c in final["candidates"] if c["best"])
    stamp = json.loads((out / "best" / "architecture.json").read_text())
    assert arch_key(stamp["architecture"]) == arch_key(best["architecture"])

    # best/'s query tower distilled into 2 layers (the default): a model directory sharing best/'s product cache
    from defectnas.serving.cache import title_tower_hash

    distilled = final["distilled"]
    assert summary["distilled"]["key"] == distilled["key"] and distilled["distilled_from"] == best["key"]
    student = DefectClassifier.load(out / "distilled")
    assert student.model_config_.query_backbone_layers == 2 and title_tower_hash(out / "distilled") == title_tower_hash(out / "best")
    assert distilled["vs_teacher"]["queries"] == distilled["vs_default"]["queries"] == summary["paired_test"]["queries"]
    assert distilled["latency_ms"] > 0 and distilled["speedup_over_teacher"] > 0
    # the paired tests read the probabilities the reported APs were computed on (float32 copies once made ties)
    default_row = next(c for c in final["candidates"] if "default" in c["roles"])
    assert final["paired_test"]["diff"] == pytest.approx(best["test_ap"] - default_row["test_ap"], abs=2e-6)
    assert distilled["vs_teacher"]["diff"] == pytest.approx(distilled["test_ap"] - distilled["teacher_test_ap_seed"], abs=2e-6)
    assert main(["evaluate", "--model", str(out / "distilled"), "--data", str(search_sample), "--split", "test", "--quiet"]) == 0
    held_out = json.loads(capsys.readouterr().out)  # the search's own test queries (splits.json)
    assert set(held_out) == CONTRACT_KEYS and held_out["average_precision"] == pytest.approx(distilled["test_ap"], abs=1e-4)

    # resuming a finished search trains nothing again, nor distils
    trials = read_trials(out)
    retrained = (out / "retrain.jsonl").read_text()
    assert main(argv + ["--resume"]) == 0
    capsys.readouterr()
    assert read_trials(out) == trials and (out / "retrain.jsonl").read_text() == retrained
    assert json.loads((out / "final.json").read_text())["distilled"]["key"] == distilled["key"]


@pytest.mark.slow
def test_seed_space_reproduces_the_papers_search(tmp_path, search_sample, tiny_child_config, capsys):
    out = tmp_path / "search"
    argv = ["search", "--data", str(search_sample), "--out", str(out), "--space", "seed", "--trials", "3", "--top-k", "1",
            "--pareto-max", "0", "--noise-repeats", "0", "--child-seeds", "1", "--reward-metric", "f1", "--child-rows", "300",
            "--final-rows", "300", "--final-epochs", "1", "--final-seeds", "1", "--latency-weight", "0.07",
            "--config", str(tiny_child_config), "--quiet", "--seed", "0"]
    assert main(argv) == 0
    capsys.readouterr()
    trials = read_trials(out)
    target = json.loads((out / "search.json").read_text())["latency_target_ms"]
    assert target > 0
    for r in trials:
        assert len(r["architecture"]) == 5 and set(r["architecture"][0]) == {"mixer", "heads", "ffn", "ratio"}
        assert r["reward"] == pytest.approx(r["f1"] * (r["latency_ms"] / target) ** -0.07, rel=1e-4)
    clf = DefectClassifier.load(out / "best")
    assert len(clf.model_config_.title_layers) == 5


@pytest.mark.slow
def test_children_in_worker_processes(tmp_path, search_sample):
    cfg = SearchConfig(data=str(search_sample), space="seed", trials=2, top_k=0, pareto_max=0, noise_repeats=0, workers=2,
                       child_rows=300, child_seeds=1, batch_size=2, seed=0, options=dict(TINY_CHILD))
    result = run_search(cfg, tmp_path / "s")
    assert [r["trial"] for r in result.trials] == [0, 1]
    assert [r["step"] for r in result.trials] == [0, 0]  # one batch of two: one controller step
    assert all(0.0 <= r["f1"] <= 1.0 and r["latency_ms"] > 0 for r in result.trials)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one worker runs the Ray tests in turn (pyproject: --dist loadgroup)
def test_children_as_ray_tasks(tmp_path, search_sample):
    """Ray is part of the test install: this runs in CI, it does not skip."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = SearchConfig(data=str(search_sample), space="seed", trials=3, top_k=1, pareto_max=0, noise_repeats=0,
                           child_seeds=1, final_seeds=1, ray_address="auto", child_rows=300, final_rows=300, final_epochs=1,
                           batch_size=2, seed=0, options=dict(TINY_CHILD))
        result = run_search(cfg, tmp_path / "s")
    finally:
        ray.shutdown()
    assert [r["trial"] for r in result.trials] == [0, 1, 2]
    assert [r["step"] for r in result.trials] == [0, 0, 1]
    assert all(0.0 <= r["ap"] <= 1.0 and r["latency_ms"] > 0 for r in result.trials)
    assert (tmp_path / "s" / "best" / "config.json").exists() and len(result.top_k) == 1
