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


def test_the_report_answers_from_final_json_and_is_self_contained(tmp_path, synthetic_csv, fake_children, monkeypatch):
    monkeypatch.setattr(final_module, "distill_best", fake_distiller([], speedup=3.0, metric_change=-0.001))
    cfg = config(synthetic_csv, space="serving", trials=12, top_k=2, pareto_max=2, final_seeds=2, noise_repeats=2,
                 strategy="random", distill_query=2)
    out = tmp_path / "s"
    logged: list[str] = []
    run_search(cfg, out, log=logged.append)
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
