"""report.html of a search: self-contained, every tagged number is the number in the file it names."""

from __future__ import annotations

import html
import json
import re

import pytest

import defectnas.search.final as final_module
from defectnas.html_page import fmt, lookup
from defectnas.search.runner import run_search

from .test_distill_step import fake_distiller
from .test_runner import config

TAGGED = re.compile(r'<span data-key="([^"]+)">([^<]*)</span>')


def files_of(out) -> dict:
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    final = out / "final.json"
    return {"search": json.loads((out / "search.json").read_text()),
            "final": json.loads(final.read_text()) if final.exists() else {},
            "trials": sorted(trials, key=lambda r: r["trial"])}


def check_tags(page: str, files: dict) -> set[str]:
    """Every data-key of the page resolves in the files and shows that value (to the digits shown); returns the keys."""
    seen = set()
    for key, shown in TAGGED.findall(page):
        value, shown = lookup(files, key), html.unescape(shown)
        if value is None or value != value:
            assert shown == "–", key
        elif isinstance(value, bool):
            assert shown == ("yes" if value else "no"), key
        elif isinstance(value, (int, float)):
            text = shown.lstrip("+").replace(",", "")
            if "e" in text:
                assert float(text) == pytest.approx(value, rel=0.06), key
            else:
                decimals = len(text.split(".")[1]) if "." in text else 0
                assert abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-12, key
        else:
            assert shown == str(value), key
        seen.add(key)
    return seen


def distilled_search(out, data, monkeypatch, **kw) -> tuple:
    """A serving-space search of fake children whose best/ is distilled (by the fake distiller); its config and log lines."""
    monkeypatch.setattr(final_module, "distill_best", fake_distiller([], speedup=3.0, metric_change=-0.001))
    cfg = config(data, **{"space": "serving", "trials": 8, "top_k": 2, "pareto_max": 2, "final_seeds": 2, "noise_repeats": 2,
                          "strategy": "random", "distill_query": 2, **kw})
    logged: list[str] = []
    run_search(cfg, out, log=logged.append)
    return cfg, logged


def test_the_report_answers_from_final_json_and_is_self_contained(tmp_path, synthetic_csv, fake_children, monkeypatch):
    out = tmp_path / "s"
    cfg, logged = distilled_search(out, synthetic_csv, monkeypatch)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert any(line.startswith("report: ") and line.split()[1] == str(out / "report.html") for line in logged)

    # self-contained: no script, nothing fetched from elsewhere; the plots inside
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)
    assert page.count('src="data:image/png;base64,') == 4  # final, pareto, rewards, noise

    files = files_of(out)
    keys = check_tags(page, files)
    final = files["final"]
    n = len(final["candidates"])
    # each retrained candidate's row: search-time and retrained side by side, test AP, served ms
    for i in range(n):
        assert {f"final.candidates.{i}.valid_metric", f"final.candidates.{i}.latency_ms"} <= keys
        if final["candidates"][i].get("selection_bias") is not None:
            assert f"final.candidates.{i}.selection_bias" in keys
    assert {f"final.pareto.{i}.latency_ms" for i in range(len(final["pareto"]))} <= keys
    assert "search.noise_floor.std_of_mean" in keys and "search.noise_floor.mean" in keys
    # the three answers
    best = next(c for c in final["candidates"] if c["best"])
    if "default" in best["roles"]:
        assert "best/ is train&#x27;s default" in page or "best/ is train's default" in page
    else:
        assert "final.paired_test.diff" in keys and "final.paired_test.verdict" in keys
    assert {"final.distilled.latency_ms", "final.distilled.vs_default.diff", "final.distilled.vs_default.verdict"} <= keys
    # the top trials, by reward
    top = max(range(len(files["trials"])), key=lambda i: (files["trials"][i]["reward"], -files["trials"][i]["trial"]))
    assert f"trials.{top}.reward" in keys

    # a resumed, finished search writes the same page again (from the same files)
    (out / "report.html").unlink()
    run_search(cfg, out, resume=True)
    check_tags((out / "report.html").read_text(encoding="utf-8"), files_of(out))


def test_a_search_without_retrains_or_noise_floor_says_so(tmp_path, synthetic_csv, fake_children):
    out = tmp_path / "s"
    run_search(config(synthetic_csv, trials=4), out)  # --top-k 0 --pareto-max 0 --noise-repeats 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Nothing was retrained" in page and "not measured (--noise-repeats below 2)" in page
    keys = check_tags(page, files_of(out))
    assert keys and all(not k.startswith("final.") for k in keys)


@pytest.mark.parametrize("value, digits, shown", [(0.00001, 4, "1e-05"), (float("nan"), 4, "–"), (None, 2, "–"), (12345, 0, "12,345"),
                                                   (True, 0, "yes"), (0.25, 2, "0.25")])
def test_page_numbers_never_read_as_a_false_zero(value, digits, shown):
    assert fmt(value, digits) == shown


# ------------------------------------------------------------ final.json: what a new user could not read off it
def test_saved_models_carry_their_own_seeds_scores_beside_the_means(tmp_path, synthetic_csv, fake_children, monkeypatch):
    """A folder holds the first retrain seed's model; final.json's valid_metric/test_ap are means over the seeds."""
    out = tmp_path / "s"
    _, logged = distilled_search(out, synthetic_csv, monkeypatch, top_k=1)
    final = json.loads((out / "final.json").read_text())
    by_key = {c["key"]: c for c in final["candidates"]}
    for c in final["candidates"]:
        if "distilled" in c["roles"]:  # one model, one seed: its scores are the saved model's
            assert c["saved_test_ap"] == pytest.approx(c["test_ap"], abs=1e-6) and c["saved_valid_metric"] == pytest.approx(c["valid_metric"], abs=1e-6)
            continue
        assert c["saved_seed"] == final["final_seeds"][0]
        assert c["saved_valid_metric"] == pytest.approx(c["valid_ap_seeds"][0], abs=1e-6)
        assert c["saved_test_ap"] == pytest.approx(c["test"][0]["average_precision"], abs=1e-6)
        assert c["saved_test_ap"] != pytest.approx(c["test_ap"], abs=1e-9)  # the fake's seeds differ: the mean is not the saved model's
    for e in final["pareto"]:
        assert {f: e[f] for f in ("saved_seed", "saved_valid_metric", "saved_test_ap")} == \
            {f: by_key[e["key"]][f] for f in ("saved_seed", "saved_valid_metric", "saved_test_ap")}
    # the closing line gives every timed model's saved test AP beside its ms; the retrain lines say which is the default
    closing = next(line for line in logged if line.startswith("served, timed side by side"))
    assert len(re.findall(r"test AP \d", closing)) == len(final["pareto"]) + 1
    assert sum(line.startswith("retrained train's default: ") for line in logged) == 1
    # train's default: its search-time scores are the noise floor's first repeat (the same child seeds)
    default = next(c for c in final["candidates"] if "default" in c["roles"])
    floor = json.loads((out / "search.json").read_text())["noise_floor"]
    assert default["search_metric"] == floor["metric_search_seeds"] and default["search_gain_over_default"] == 0
    assert default["selection_bias"] == 0


def test_when_best_is_the_default_the_most_accurate_searched_architecture_is_tested_against_it(tmp_path, synthetic_csv,
                                                                                               fake_children, monkeypatch):
    from defectnas.search.space import ServingSpace, arch_key

    from . import fakes

    default = arch_key(ServingSpace().default_architecture())
    plain = fakes.fake_f1
    monkeypatch.setattr(fakes, "fake_f1", lambda a: plain(a) + (0.3 if isinstance(a, dict) and arch_key(a) == default else 0.0))
    cfg = config(synthetic_csv, space="serving", trials=8, top_k=2, pareto_max=1, final_seeds=2, noise_repeats=2, strategy="random")
    out = tmp_path / "s"
    logged: list[str] = []
    run_search(cfg, out, log=logged.append)
    final = json.loads((out / "final.json").read_text())
    assert final["paired_test"]["same_architecture"]  # best/ is the default: that test compares it with itself
    searched = final["searched_vs_default"]
    others = [c for c in final["candidates"] if "default" not in c["roles"]]
    assert searched["candidate"] == max(others, key=lambda c: c["valid_metric"])["key"]
    assert searched["default"] == final["paired_test"]["default"] and searched["queries"] == final["paired_test"]["queries"]
    assert searched["ci_low"] <= searched["diff"] <= searched["ci_high"]
    assert searched["verdict"] in ("better by more than noise", "worse by more than noise", "not distinguishable from noise")
    assert any(line.startswith("the most accurate searched architecture on validation") for line in logged)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert {"final.searched_vs_default.diff", "final.searched_vs_default.verdict"} <= check_tags(page, files_of(out))


def test_a_best_that_is_not_the_default_needs_no_second_test(tmp_path, synthetic_csv, fake_children):
    cfg = config(synthetic_csv, space="serving", trials=8, top_k=2, pareto_max=1, final_seeds=2, strategy="random")
    run_search(cfg, tmp_path / "s")
    final = json.loads((tmp_path / "s" / "final.json").read_text())
    assert not final["paired_test"]["same_architecture"] and final["searched_vs_default"] is None


def test_the_distillations_epoch_records_read_as_sentences():
    from defectnas.search.distill import _epoch_sentences

    said: list[str] = []
    log = _epoch_sentences(said.append, 4)
    log(json.dumps({"epoch": 2, "phase": "distil-query", "loss": 0.8712, "valid_ap": 0.17634, "seconds": 10.65}))
    log("resumed from x after epoch 1")
    assert said == ["distillation epoch 2 of 4: loss 0.8712, valid AP 0.1763, 11s", "resumed from x after epoch 1"]


def test_under_a_budget_the_progress_bar_counts_children_to_the_cap_without_an_eta_and_says_the_minutes_left(
        tmp_path, synthetic_csv, fake_children, capsys):
    run_search(config(synthetic_csv, trials=4, budget_minutes=30), tmp_path / "s", quiet=False)
    err = capsys.readouterr().err
    assert "≤ 4 children, ≤ 30 min in all" in err and "4/4 [" in err and "left=30.0min" in err
    assert not re.search(r"/4 \[\d\d:\d\d<", err)  # the budget usually stops short of the cap: no ETA counted to it


def test_a_childs_data_warnings_come_back_to_the_search_process_once(monkeypatch):
    """Worker processes and Ray tasks cannot print 'warning: ...' once: the child returns them, the executor raises them here."""
    import warnings

    import defectnas.search.child as child
    from defectnas.errors import DataWarning
    from defectnas.search.executors import rewarned

    def warns(job, *tables):
        for _ in job["seeds"]:  # once per seed, as a fit on a small validation split does
            warnings.warn("the validation split has 9 defects", DataWarning)
        return {"ap": 0.1}

    monkeypatch.setattr(child, "train_child", warns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes the child
        result = child.evaluate_child({"seeds": [0, 1]})
    assert result["warnings"] == ["the validation split has 9 defects"]
    with pytest.warns(DataWarning, match="9 defects") as caught:
        assert list(rewarned(iter([(0, result)]))) == [(0, {"ap": 0.1})]
    assert len(caught) == 1


def test_search_takes_the_split_shares(tmp_path, synthetic_csv, fake_children, capsys):
    from defectnas.cli import main

    out = tmp_path / "s"
    assert main(["search", "--data", str(synthetic_csv), "--out", str(out), "--trials", "2", "--top-k", "0", "--pareto-max", "0",
                 "--noise-repeats", "0", "--space", "seed", "--valid-frac", "0.3", "--test-frac", "0.1", "--quiet"]) == 0
    saved = json.loads((out / "search.json").read_text())
    assert (saved["valid_frac"], saved["test_frac"]) == (0.3, 0.1)
    with pytest.raises(SystemExit) as refused:  # refused as the command line is parsed
        main(["search", "--data", str(synthetic_csv), "--out", str(tmp_path / "t"), "--valid-frac", "1.5"])
    assert refused.value.code == 2 and "argument --valid-frac: must be a share of queries" in capsys.readouterr().err


def test_a_seed_space_search_names_its_reference_not_trains_default(tmp_path, synthetic_csv, fake_children):
    """The seed space's reference (att4/ffn×4 in every title layer) is not the model `train` makes: never call it that."""
    logged: list[str] = []
    out = tmp_path / "s"
    run_search(config(synthetic_csv, trials=6, top_k=1, pareto_max=1, final_seeds=1, noise_repeats=2, latency_budget_ms=1.0),
               out, log=logged.append)
    assert not [line for line in logged if "train's default" in line]
    assert any("the seed space's reference (att4/ffn×4 in every title layer)" in line for line in logged)
    page = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "train's default" not in page and "More accurate than the seed space's reference" in page


def test_the_python_api_refuses_a_dataframe_as_data_in_one_line(tmp_path, synthetic_pairs):
    from defectnas.errors import ConfigError
    from defectnas.search.config import SearchConfig

    with pytest.raises(ConfigError, match=r"data must be a path to a table file, not a DataFrame.*to_parquet"):
        run_search(SearchConfig(data=synthetic_pairs), tmp_path / "api")
    assert not (tmp_path / "api").exists()


def test_one_child_seed_reads_as_no_spread_not_zero(tmp_path, synthetic_csv, fake_children):
    logged: list[str] = []
    run_search(config(synthetic_csv, trials=2, child_seeds=1, noise_repeats=1), tmp_path / "s", log=logged.append)
    lines = [line for line in logged if line.startswith(("trial ", "noise floor repeat"))]
    assert len(lines) == 3 and all("(one seed: no spread)" in line and "± 0.0000" not in line for line in lines)
    keys = check_tags((tmp_path / "s" / "report.html").read_text(encoding="utf-8"), files_of(tmp_path / "s"))
    assert "trials.0.metric" in keys and not any(k.endswith(".spread") for k in keys)  # the page shows no spread either
