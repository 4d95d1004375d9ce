"""What a new user's trial of `defectnas search` found, one test (or two) per kind of problem:

1. ``SearchResult.final`` is final.json's dict (the README's ``result.final["paired_test"]`` crashed);
2. the budget counts the frozen pass where it will be paid: a search resumed in a new process pays
   it again for the children's texts (a child estimated at 0.4 min took 224 s);
3. the noise floor, sampling and retrain bars say how far they are and how much budget is left;
4. a bar written to a file shows the values of the update it writes (not the previous ones);
5. ``--latency-budget-ms 0`` is documented as "none";
6. without a noise floor a latency budget is still checked at the start, and noise.png says it has no band.

All with fake children (tests/search/fakes.py): fast and deterministic.
"""

from __future__ import annotations

import io
import json
import re

import pytest

from defectnas.errors import ConfigError
from defectnas.search.config import SearchConfig
from defectnas.search.executors import FrozenLedger, job_tables
from defectnas.search.final import CHILD_TABLES, FINAL_TABLES, frozen_pass_estimate_s, retrain_estimate_s, table_texts
from defectnas.search.runner import build_space, prepare_tables, run_search
from defectnas.search.space import ServingSpace
from defectnas.search.trials import TrialLog

from .conftest import read_trials
from .fakes import fake_evaluate_child, fake_latency
from .test_runner import FakeClock, config


# ------------------------------------------------------------------ 1. result.final is final.json
def test_search_result_final_is_final_json_also_after_a_resume(tmp_path, synthetic_csv, fake_children):
    out = tmp_path / "s"
    cfg = config(synthetic_csv, trials=4, top_k=1, pareto_max=1, noise_repeats=2, final_seeds=2)
    result = run_search(cfg, out)
    on_disk = json.loads((out / "final.json").read_text(encoding="utf-8"))
    assert result.final == on_disk
    # the README's Python API line and the keys its search section names
    assert result.final["paired_test"]["verdict"] == on_disk["paired_test"]["verdict"]
    for key in ("paired_test", "searched_vs_default", "distilled", "retrain", "candidates", "pareto", "latency", "best_dir",
                "default_dir", "noise_floor"):
        assert key in result.final, key
    resumed = run_search(cfg, out, resume=True)  # a finished search, resumed: final.json rewritten, the object the same
    assert resumed.final == json.loads((out / "final.json").read_text(encoding="utf-8"))
    assert resumed.final["paired_test"] == result.final["paired_test"]
    nothing = run_search(config(synthetic_csv, trials=2), tmp_path / "none")  # --top-k 0 --pareto-max 0: no final.json
    assert nothing.final == {} and not (tmp_path / "none" / "final.json").exists()


# ------------------------------------------------------------------ 2. the frozen pass, counted where it is paid
def test_the_frozen_pass_is_counted_for_the_texts_the_running_processes_have_not_memoised(synthetic_csv, tmp_path):
    cfg = config(synthetic_csv, child_rows=40, top_k=1, final_epochs=2)
    tables, space = prepare_tables(cfg), build_space(cfg)
    floor = {"child_seconds": 5.0, "latency_ms": 0.0, "frozen_s_per_text": 0.01}
    children, final = table_texts(tables, CHILD_TABLES), table_texts(tables, FINAL_TABLES)
    assert children & final and final - children
    # the next child's pass: all the children's texts in a fresh process, none once they are memoised
    assert frozen_pass_estimate_s(tables, floor, warm=frozenset(), names=CHILD_TABLES) == pytest.approx(0.01 * len(children))
    assert frozen_pass_estimate_s(tables, floor, warm=CHILD_TABLES, names=CHILD_TABLES) == 0.0
    # the retrains' pass: every final text in a fresh process, those no child saw after children ran, none after a retrain
    assert frozen_pass_estimate_s(tables, floor, warm=frozenset()) == pytest.approx(0.01 * len(final))
    assert frozen_pass_estimate_s(tables, floor, warm=CHILD_TABLES) == pytest.approx(0.01 * len(final - children))
    assert frozen_pass_estimate_s(tables, floor, warm=FINAL_TABLES) == 0.0
    empty = TrialLog(tmp_path / "none.jsonl")
    cold = retrain_estimate_s(cfg, space, empty, tables, floor, warm=frozenset())
    warm = retrain_estimate_s(cfg, space, empty, tables, floor, warm=CHILD_TABLES)
    assert cold - warm == pytest.approx(0.01 * len(final & children))
    # without a noise floor, the rate comes from logged children that paid a pass
    paid = [{"seconds": 30.0, "frozen_s": 20.0, "frozen_texts": 1000}, {"seconds": 5.0, "frozen_s": 0.0, "frozen_texts": 0}]
    assert frozen_pass_estimate_s(tables, {}, warm=frozenset(), names=CHILD_TABLES, records=paid) == pytest.approx(0.02 * len(children))


def test_the_ledger_knows_which_tables_every_process_has_memoised():
    child = {"tables": {"train": "child_train", "valid": "child_valid"}}
    retrain = {"tables": {"train": "train", "valid": "valid", "test": ""}}
    assert job_tables(child) == set(CHILD_TABLES) and job_tables(retrain) == {"train", "valid"}
    one = FrozenLedger(1)
    assert one.warm() == frozenset()
    one.note(child, {"pid": 7})
    assert one.warm() == CHILD_TABLES
    two = FrozenLedger(2)  # two worker processes: a table is memoised for the next job only when both have passed it
    two.note(child, {"pid": 7})
    assert two.warm() == frozenset()
    two.note(child, {"pid": 8})
    two.note(retrain, {"pid": 8})
    assert two.warm() == CHILD_TABLES


def test_a_search_resumed_in_a_new_process_counts_the_frozen_pass_its_first_child_pays(tmp_path, fake_timing, synthetic_csv,
                                                                                       monkeypatch):
    """The first process's noise floor paid the pass over the children's texts (100 s here); its children cost 5 s. A
    new process pays the pass again with its first child: the budget must count it (it fitted a child at "≈ 0.4 min"
    that took 224 s, and the search overran by 15 minutes), and not once those texts are memoised."""
    import defectnas.search.executors as executors
    import defectnas.search.runner as runner

    clock, memo = FakeClock(), set()  # memo: the tables this "process" has passed through the frozen layers
    monkeypatch.setattr(runner, "time", clock)
    base = config(synthetic_csv, batch_size=1, noise_repeats=1)
    texts = len(table_texts(prepare_tables(base), CHILD_TABLES))

    def child(job, *a):
        pays = bool(job_tables(job) - memo)
        memo.update(job_tables(job))
        seconds = 5.0 + 100.0 * pays
        clock.now += seconds
        return {**fake_evaluate_child(job, *a), "seconds": seconds, "frozen_s": 100.0 * pays, "frozen_texts": texts * pays}

    monkeypatch.setattr(executors, "evaluate_child", child)
    out = tmp_path / "s"
    first = run_search(config(synthetic_csv, batch_size=1, noise_repeats=1, trials=2, budget_minutes=0), out)
    assert first.seconds == pytest.approx(115.0)  # the floor (5 s + the 100 s pass), then two 5 s children
    assert [r["frozen_s"] for r in read_trials(out)] == [0.0, 0.0]  # logged: the floor had paid the pass

    memo.clear()  # a new process
    said: list[str] = []
    tight = run_search(config(synthetic_csv, batch_size=1, noise_repeats=1, trials=4, budget_minutes=(115 + 50) / 60), out,
                       resume=True, log=said.append)
    assert len(tight.trials) == 2  # 50 s left: a 5 s child fits, the 100 s pass its process would pay first does not
    stop = next(line for line in said if "sampling stops after 2 trials" in line)
    assert "one more child ≈ 0.1 min, + 1.7 min once to pass the children's texts through the frozen layers" in stop

    memo.clear()
    roomy = run_search(config(synthetic_csv, batch_size=1, noise_repeats=1, trials=4, budget_minutes=(115 + 120) / 60), out,
                       resume=True)
    assert len(roomy.trials) == 4  # 120 s left: the pass and a child (105 s), then, the texts memoised, one more 5 s child
    lines = read_trials(out)
    assert [r["frozen_s"] for r in lines] == [0.0, 0.0, 100.0, 0.0] and lines[2]["frozen_texts"] == texts


# ------------------------------------------------------------------ 3. progress: how far, how long is left; --quiet
def bar_lines(err: str, desc: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(desc)]


def counts(lines: list[str], total: int) -> list[int]:
    """The counts the lines show, a count redrawn (after a log line written above the bar) once."""
    shown = [int(re.search(rf"(\d+)/{total} \[", line).group(1)) for line in lines]
    return [n for i, n in enumerate(shown) if i == 0 or n != shown[i - 1]]


def test_every_step_has_a_bar_that_moves_and_says_what_is_left_and_quiet_silences_them(tmp_path, synthetic_csv, fake_children,
                                                                                       capsys, monkeypatch):
    import defectnas.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a bar into a file writes every update (else one per 30 s)
    cfg = config(synthetic_csv, trials=4, budget_minutes=30, noise_repeats=3, top_k=1, pareto_max=1, final_seeds=2)
    result = run_search(cfg, tmp_path / "s", quiet=False)
    err = capsys.readouterr().err
    floor = bar_lines(err, "noise floor:")
    assert counts(floor, 3) == [0, 1, 2, 3] and all("left=" in line for line in floor)  # a bar per repeat
    search = bar_lines(err, "search (")
    assert counts(search, 4) == [0, 1, 2, 3, 4] and all("left=30.0min" in line for line in search)  # the trial cap as total
    assert not any(re.search(r"/4 \[\d\d:\d\d<", line) for line in search)  # no ETA to a cap the budget may stop short of
    n = len(result.final["candidates"]) * 2
    retrain = bar_lines(err, f"retrain {n // 2} × 2 seeds:")
    assert counts(retrain, n) == list(range(n + 1)) and all("left=" in line for line in retrain)  # per seed, not per model

    run_search(cfg, tmp_path / "quiet", quiet=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# ------------------------------------------------------------------ 4. a bar's line shows its own update's values
def test_a_bar_in_a_file_shows_the_best_reward_of_the_children_it_counts(tmp_path, synthetic_csv, fake_children, capsys, monkeypatch):
    import defectnas.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    run_search(config(synthetic_csv, trials=5, batch_size=1, budget_minutes=0), tmp_path / "s", quiet=False)
    rewards = [r["reward"] for r in read_trials(tmp_path / "s")]
    lines = bar_lines(capsys.readouterr().err, "search (")
    assert lines and counts(lines, 5)[-1] == 5
    for line in lines:
        if "best=" not in line:
            continue
        n = int(re.search(r"(\d+)/5 \[", line).group(1))
        shown = re.search(r"best=([^,\]]+)", line).group(1)
        assert shown == (f"{max(rewards[:n]):.4f}" if n else "nan"), line  # it once read best=nan beside "1/5"


def test_a_loop_that_sets_the_postfix_after_each_step_writes_it_beside_that_steps_count():
    """The distillation's bar (a loop over steps, ``set_postfix(loss=...)`` after each) wrote "0/264 [00:31<?, ?it/s,
    loss=0.9560]": the loss of step 1 beside the count before it."""
    from defectnas.progress import progress

    log = io.StringIO()
    bar = progress(range(3), file=log, desc="distil epoch 1/1", mininterval=0)
    for i in bar:
        bar.set_postfix(loss=f"{i}.0")
    lines = log.getvalue().splitlines()
    assert [re.search(r"(\d)/3", line).group(1) for line in lines] == ["0", "1", "2", "3"]
    assert [re.search(r"loss=(\d)", line).group(1) if "loss" in line else None for line in lines] == [None, "0", "1", "2"]


# ------------------------------------------------------------------ 5. --latency-budget-ms 0
def test_the_latency_budget_help_says_0_is_none_and_negatives_are_refused(tmp_path, capsys):
    from defectnas.cli import main

    with pytest.raises(SystemExit) as e:
        main(["search", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "children over it get reward 0; 0: none (the default)" in text
    assert SearchConfig().latency_budget_ms == 0.0
    with pytest.raises(ConfigError, match=r"--latency-budget-ms \(latency_budget_ms\) must not be negative, got -1"):
        SearchConfig(latency_budget_ms=-1)
    assert main(["search", "--data", str(tmp_path / "x.csv"), "--out", str(tmp_path / "s"), "--latency-budget-ms", "-1"]) == 2
    assert "--latency-budget-ms (latency_budget_ms) must not be negative" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_config_field_documents_0_as_none():
    from pathlib import Path

    import defectnas.search.config as module

    line = next(line for line in Path(module.__file__).read_text(encoding="utf-8").splitlines() if "latency_budget_ms: float" in line)
    assert "0: none (the default)" in line


# ------------------------------------------------------------------ 6. no noise floor: the budget checked at the start anyway
def test_without_a_noise_floor_a_latency_budget_over_the_default_is_said_at_the_start(tmp_path, synthetic_csv, fake_children):
    default_ms = fake_latency(ServingSpace().default_architecture())
    said: list[str] = []
    cfg = config(synthetic_csv, space="serving", strategy="random", trials=3, top_k=1, noise_repeats=0, latency_budget_ms=default_ms - 1)
    run_search(cfg, tmp_path / "s", log=said.append)
    first_trial = next(i for i, line in enumerate(said) if line.startswith("trial 0:"))
    note = next(i for i, line in enumerate(said) if "over --latency-budget-ms" in line and "cannot be best/" in line)
    assert note < first_trial
    assert any(line.startswith("--noise-repeats 0: no noise floor, but") and "to check it against --latency-budget-ms" in line
               for line in said[:note])
    assert fake_children[0]["architecture"] == ServingSpace().default_architecture()  # timed once, as the floor's first repeat
    assert sum(j["architecture"] == fake_children[0]["architecture"] and j["seeds"] == fake_children[0]["seeds"]
               for j in fake_children if not j.get("save_dir") and "probs_path" not in j) == 1
    floor = json.loads((tmp_path / "s" / "search.json").read_text())["noise_floor"]
    assert floor["repeats"] == 1 and floor["latency_ms"] == default_ms and floor["std_of_mean"] is None
    # without a budget, --noise-repeats 0 still means no floor at all
    plain = run_search(config(synthetic_csv, trials=2, noise_repeats=0), tmp_path / "plain")
    assert plain.noise_floor == {}


def test_noise_png_says_when_it_has_no_band(tmp_path, monkeypatch):
    import defectnas.search.plots as plots

    titles: list[str] = []
    monkeypatch.setattr(plots, "_save", lambda plt, fig, path: (titles.append(fig.axes[0].get_title()), plt.close(fig)))
    records = [{"trial": 0, "metric": 0.3, "spread": 0.01, "reward": 0.3}, {"trial": 1, "metric": 0.35, "spread": 0.02, "reward": 0.35}]
    plots.plot_noise(records, tmp_path / "a.png", floor={})
    plots.plot_noise(records, tmp_path / "b.png", floor={"repeats": 1, "metric_search_seeds": 0.31, "std_of_mean": None})
    plots.plot_noise(records, tmp_path / "c.png", floor={"repeats": 3, "metric_search_seeds": 0.31, "std_of_mean": 0.02})
    assert "no noise floor measured (--noise-repeats 0), so no band" in titles[0] and "inside the band" not in titles[0]
    assert "no noise floor measured (one seed set" in titles[1] and "inside the band" not in titles[1]
    assert titles[2] == "Reward against the noise floor: differences inside the band are seed noise"
