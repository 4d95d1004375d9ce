"""The search loop with fake children: order, caching, top-k, checkpoints, resume after crashes, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from defectnas.errors import ConfigError
from defectnas.search.config import SearchConfig
from defectnas.search.reinforce import Reinforce
from defectnas.search.runner import run_search
from defectnas.search.space import arch_key
from defectnas.storage import load_tensors

from .conftest import read_trials
from .fakes import fake_f1, kill_test_config


def config(data: Path, **kw) -> SearchConfig:
    return SearchConfig(data=str(data), **{"trials": 8, "top_k": 0, "seed": 1, "options": {"d_model": 16}, **kw})


def keys(records: list[dict]) -> list[str]:
    return [arch_key(r["architecture"]) for r in records]


def test_search_writes_its_files(tmp_path, synthetic_csv, fake_children):
    result = run_search(config(synthetic_csv, top_k=3), tmp_path / "s")
    out = tmp_path / "s"
    trials = read_trials(out)
    assert [r["trial"] for r in trials] == list(range(8)) and [r["step"] for r in trials] == list(range(8))
    for r in trials:
        assert {"trial", "architecture", "reward", "f1", "latency_ms", "seconds", "cached", "params"} <= set(r)
        assert r["reward"] == pytest.approx(fake_f1(r["architecture"]))  # latency_weight 0: reward = F1
    _, meta = load_tensors(out / "controller.safetensors")
    assert meta["step"] == 8 and meta["extra"]["next_trial"] == 8
    for name in ("rewards.png", "pareto.png", "search.json", "top_k.json", "retrain.jsonl"):
        assert (out / name).exists(), name
    top = json.loads((out / "top_k.json").read_text())
    assert [e["rank"] for e in top] == [1, 2, 3] and sum(e["best"] for e in top) == 1
    assert top[0]["search_reward"] == max(r["reward"] for r in trials)
    best = next(e for e in top if e["best"])
    saved = json.loads((out / "best" / "config.json").read_text())["model"]["title_layers"]
    assert arch_key(saved) == arch_key(best["architecture"])
    assert result.best_dir == out / "best" and not (out / "retrain").exists()
    assert len(fake_children) == 8 + 3  # 8 children (all distinct here) + 3 retrains


def test_same_seed_same_sequence_other_seed_differs(tmp_path, synthetic_csv, fake_children):
    a = run_search(config(synthetic_csv), tmp_path / "a").trials
    b = run_search(config(synthetic_csv), tmp_path / "b").trials
    c = run_search(config(synthetic_csv, seed=2), tmp_path / "c").trials
    assert keys(a) == keys(b) and keys(a) != keys(c)


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
    assert len(fake_children) == len(trials) - len(cached) == len({arch_key(r["architecture"]) for r in trials})


def test_batches_share_a_controller_step(tmp_path, synthetic_csv, fake_children):
    trials = run_search(config(synthetic_csv, trials=7, batch_size=3), tmp_path / "s").trials
    assert [r["step"] for r in trials] == [0, 0, 0, 1, 1, 1, 2]
    assert json.loads((tmp_path / "s" / "search.json").read_text())["batch_size"] == 3


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


def test_crash_inside_a_batch_keeps_finished_children(tmp_path, synthetic_csv, fake_children, monkeypatch):
    import defectnas.search.executors as executors

    reference = run_search(config(synthetic_csv, batch_size=3), tmp_path / "ref").trials
    fake, count = executors.evaluate_child, []

    def dies_on_fifth(job, *args):
        count.append(1)
        if len(count) == 5:  # the second child of the second batch
            raise RuntimeError("killed")
        return fake(job, *args)

    monkeypatch.setattr(executors, "evaluate_child", dies_on_fifth)
    with pytest.raises(RuntimeError, match="killed"):
        run_search(config(synthetic_csv, batch_size=3), tmp_path / "s")
    assert [r["trial"] for r in read_trials(tmp_path / "s")] == [0, 1, 2, 3]
    monkeypatch.setattr(executors, "evaluate_child", fake)
    resumed = run_search(config(synthetic_csv, batch_size=3), tmp_path / "s", resume=True).trials
    assert keys(resumed) == keys(reference) and [r["trial"] for r in resumed] == list(range(8))


def test_resume_extends_a_finished_search(tmp_path, synthetic_csv, fake_children):
    reference = run_search(config(synthetic_csv, trials=10, top_k=2), tmp_path / "ref").trials
    run_search(config(synthetic_csv, trials=6, top_k=2), tmp_path / "s")
    extended = run_search(config(synthetic_csv, trials=10, top_k=2), tmp_path / "s", resume=True)
    assert keys(extended.trials) == keys(reference)
    top = json.loads((tmp_path / "s" / "top_k.json").read_text())
    best = next(e for e in top if e["best"])
    saved = json.loads((tmp_path / "s" / "best" / "config.json").read_text())["model"]["title_layers"]
    assert arch_key(saved) == arch_key(best["architecture"])


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
    reference = json.loads((tmp_path / "s" / "reference.json").read_text())
    target = saved["latency_target_ms"]
    assert target == reference["latency_ms"] == 10.0 + 5 * 4 / 4  # the default architecture: ratio 4 everywhere
    for r in trials:
        assert r["reward"] == pytest.approx(r["f1"] * (r["latency_ms"] / target) ** -0.5)


def test_random_strategy_leaves_the_controller_alone(tmp_path, synthetic_csv, fake_children):
    rl = run_search(config(synthetic_csv, trials=12), tmp_path / "rl").trials
    rnd = run_search(config(synthetic_csv, trials=12, strategy="random"), tmp_path / "rnd").trials
    assert keys(rl) != keys(rnd)
    tensors, meta = load_tensors(tmp_path / "rnd" / "controller.safetensors")
    assert meta["step"] == 12 and not any(k.startswith("optimizer.") for k in tensors)


def test_sigkill_and_resume(tmp_path, synthetic_csv, fake_children):
    """A search process is SIGKILLed mid-way; --resume finishes it exactly as if it had not been."""
    script = Path(__file__).with_name("fakes.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(script.parent), os.environ.get("PYTHONPATH", "")])}
    trials = 10
    run_search(kill_test_config(synthetic_csv, trials), tmp_path / "ref")  # uninterrupted, in this process

    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, str(script), str(synthetic_csv), str(out), str(trials)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "trials.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the search finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(read_trials(out))
    assert 2 <= killed_at < trials

    resumed = subprocess.run([sys.executable, str(script), str(synthetic_csv), str(out), str(trials), "--resume"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    got, want = read_trials(out), read_trials(tmp_path / "ref")
    assert [r["trial"] for r in got] == list(range(trials))  # no gap, no duplicate, in order
    assert keys(got) == keys(want)
    assert [r["reward"] for r in got] == [r["reward"] for r in want]


def test_cli_resume_rules(tmp_path, synthetic_csv, fake_children, capsys):
    from defectnas.cli import main

    config_file = tmp_path / "base.json"
    config_file.write_text(json.dumps({"d_model": 16}))
    out = tmp_path / "s"
    argv = ["search", "--data", str(synthetic_csv), "--out", str(out), "--trials", "3", "--top-k", "0",
            "--config", str(config_file), "--quiet"]
    assert main(argv + ["--seed", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 3
    assert main(argv) == 2  # not without --resume
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--resume" in err and len(err.splitlines()) == 1
    assert main(argv + ["--resume", "--child-epochs", "2"]) == 2  # the budget is fixed at the start
    assert "child_epochs: started with 1, now 2" in capsys.readouterr().err
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
        run_search(config(synthetic_csv, top_k=3), tmp_path / "s")
    assert len((tmp_path / "s" / "retrain.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(executors, "evaluate_child", fake)
    fake_children.clear()
    result = run_search(config(synthetic_csv, top_k=3), tmp_path / "s", resume=True)
    assert [bool(j.get("save_dir")) for j in fake_children] == [True, True]  # no child, two retrains
    assert len(result.top_k) == 3 and len((tmp_path / "s" / "retrain.jsonl").read_text().splitlines()) == 3
    best = next(e for e in result.top_k if e["best"])
    assert best["final_reward"] == max(e["final_reward"] for e in result.top_k)
