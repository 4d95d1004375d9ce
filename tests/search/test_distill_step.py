"""The search's last step: best/'s query tower distilled, measured like a candidate, put on the front.

The loop-level tests replace the distillation with a fake (fake children leave no real model to
distil); the real distillation inside a search runs in the slow end-to-end test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import defectnas.search.final as final_module
from defectnas.search.distill import dominated, estimate_texts, student_architecture, student_key
from defectnas.search.final import retrain_estimate_s
from defectnas.search.runner import run_search
from defectnas.search.space import ServingSpace, arch_key
from defectnas.storage import append_line, atomic_write_json
from defectnas.training.query_distillation import query_like_texts

from .test_runner import config


def fake_distiller(calls: list, speedup: float, metric_change: float):
    """Stands in for distill_best: a student ``speedup``× faster than best, its metric moved by ``metric_change``."""

    def fake(cfg, space, out, best, done, tables, log_path, probs_dir, stamp, quiet, say, floor=None):
        calls.append(best["key"])
        key = student_key(best["key"], cfg.distill_query)
        d = out / "retrain" / key
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"model": {"query_backbone_layers": cfg.distill_query},
                                                   "fake_latency_ms": best["latency_ms"] / speedup}), encoding="utf-8")
        entry = {"key": key, "architecture": student_architecture(best["architecture"], cfg.distill_query), "distilled_from": best["key"],
                 "query_layers": cfg.distill_query, "epochs": cfg.distill_epochs, "seeds": best["seeds"][:1],
                 "valid_metric": best["valid_metric"] + metric_change, "valid_metric_std": 0.0, "valid_ap": best["valid_ap"] + metric_change,
                 "teacher_valid_ap_seed": best["valid_ap_seeds"][0], "latency_ms": best["latency_ms"] / (1.5 * speedup),
                 "teacher_latency_ms": best["latency_ms"],  # timed beside its teacher alone: a luckier round than the final timing's
                 "served_ms": {"teacher": [best["latency_ms"]], "student": [best["latency_ms"] / (1.5 * speedup)]},
                 "speedup_over_teacher": 1.5 * speedup, "test_ap": best["test_ap"], "seconds": 1.0}
        probs_dir.mkdir(parents=True, exist_ok=True)
        np.save(probs_dir / f"{key}.npy", np.load(probs_dir / f"{best['key']}.npy")[:1])  # the teacher's first seed, unchanged
        atomic_write_json(d / stamp, {"key": key, "space": cfg.space, "architecture": entry["architecture"], "distilled_from": best["key"]})
        append_line(log_path, json.dumps(entry))
        return entry

    return fake


def test_a_student_that_no_candidate_dominates_joins_the_front_and_is_saved(tmp_path, synthetic_csv, fake_children, monkeypatch):
    calls: list = []
    monkeypatch.setattr(final_module, "distill_best", fake_distiller(calls, speedup=3.0, metric_change=-0.001))
    cfg = config(synthetic_csv, space="serving", trials=12, top_k=1, pareto_max=2, final_seeds=2, strategy="random", distill_query=2)
    out = tmp_path / "s"
    run_search(cfg, out)
    final = json.loads((out / "final.json").read_text())
    best = next(c for c in final["candidates"] if c["best"])
    student = next(c for c in final["candidates"] if c["roles"] == ["distilled"])
    assert calls == [best["key"]] and student["distilled_from"] == best["key"] and not student["best"]
    assert student["on_front"] and student["architecture"]["query_layers"] == 2
    front = final["pareto"]
    assert [e["latency_ms"] for e in front] == sorted(e["latency_ms"] for e in front)  # pareto/0 is still the fastest
    n = next(e["n"] for e in front if e["key"] == student["key"])
    for d in (out / "pareto" / str(n), out / "distilled"):
        assert json.loads((d / "architecture.json").read_text())["key"] == student["key"]
    report = final["distilled"]
    assert report["key"] == student["key"] and report["dir"] == str(out / "distilled")
    # latency, the teacher's and the speed-up all from the final timing of every saved model (not the earlier pair's 4.5x)
    assert report["latency_ms"] == student["latency_ms"] and report["teacher_latency_ms"] == best["latency_ms"]
    assert report["speedup_over_teacher"] == round(best["latency_ms"] / student["latency_ms"], 3) == pytest.approx(3.0, rel=0.05)
    assert report["served_ms"]["student"] == [best["retrain_latency_ms"] / 4.5]
    # the student's probabilities are its teacher's first seed here: against it, a difference of exactly 0
    assert report["vs_teacher"]["diff"] == 0.0 and report["vs_teacher"]["verdict"] == "not distinguishable from noise"
    assert report["vs_default"]["queries"] == final["paired_test"]["queries"]
    assert not (out / "retrain").exists() and not (out / "distill").exists()
    rows = {c["key"]: c for c in final["candidates"]}
    for e in front:  # each front entry names the retrained models that now beat it (the student may)
        assert e["dominated_by"] == [k for k, c in rows.items() if dominated(rows[e["key"]], [c])]
    splits = json.loads((out / "distilled" / "splits.json").read_text())
    for d in [out / "best", out / "distilled"] + [out / "pareto" / str(e["n"]) for e in front]:  # evaluate --split works on each
        assert json.loads((d / "splits.json").read_text()) == splits
    assert splits["test"] and not set(splits["test"]) & set(splits["train"]) and splits["search"] == str(out)

    # resuming the finished search reinstalls the same models (the fake distils again: the real one
    # finds its entry, model and probabilities and does not)
    before = {p.name: json.loads((p / "architecture.json").read_text())["key"] for p in (out / "pareto").iterdir()}
    run_search(cfg, out, resume=True)
    after = {p.name: json.loads((p / "architecture.json").read_text())["key"] for p in (out / "pareto").iterdir()}
    assert after == before and json.loads((out / "distilled" / "architecture.json").read_text())["key"] == student["key"]


def test_a_dominated_student_is_saved_but_not_on_the_front(tmp_path, synthetic_csv, fake_children, monkeypatch):
    monkeypatch.setattr(final_module, "distill_best", fake_distiller([], speedup=0.5, metric_change=-0.05))  # slower and worse
    out = tmp_path / "s"
    run_search(config(synthetic_csv, space="serving", trials=8, top_k=1, pareto_max=2, final_seeds=1, strategy="random",
                      distill_query=2), out)
    final = json.loads((out / "final.json").read_text())
    student = next(c for c in final["candidates"] if c["roles"] == ["distilled"])
    assert not student["on_front"] and student["key"] not in {e["key"] for e in final["pareto"]}
    assert (out / "distilled" / "config.json").exists() and final["distilled"]["on_front"] is False


def test_off_means_no_student(tmp_path, synthetic_csv, fake_children, monkeypatch):
    calls: list = []
    monkeypatch.setattr(final_module, "distill_best", fake_distiller(calls, 2.0, 0.0))
    out = tmp_path / "s"
    run_search(config(synthetic_csv, space="serving", trials=4, top_k=1, final_seeds=1, distill_query=0), out)
    final = json.loads((out / "final.json").read_text())
    assert calls == [] and final["distilled"] == {"skipped": "off (--distill-query 0)"} and not (out / "distilled").exists()
    assert all(c["roles"] != ["distilled"] for c in final["candidates"])


def test_student_architecture_and_domination():
    arch = ServingSpace().default_architecture()
    student = student_architecture(arch, 2)
    assert student["query_layers"] == student["query_trainable"] == 2 and arch["query_layers"] == 6
    assert {k: v for k, v in student.items() if not k.startswith("query_")} == {k: v for k, v in arch.items() if not k.startswith("query_")}
    cells = [{"mixer": "glu", "ffn": "ff", "ratio": 4}]
    assert student_architecture(cells, 2) == cells  # the seed space does not decide the query tower
    assert arch_key(student) != arch_key(arch)
    rows = [{"latency_ms": 10.0, "valid_metric": 0.20}, {"latency_ms": 4.0, "valid_metric": 0.15}]
    assert not dominated({"latency_ms": 5.0, "valid_metric": 0.19}, rows)
    assert dominated({"latency_ms": 5.0, "valid_metric": 0.14}, rows)  # the 4 ms row is faster and more accurate
    assert not dominated({"latency_ms": 4.0, "valid_metric": 0.15}, rows)  # a tie dominates nothing


def test_the_text_estimate_is_close_to_the_texts_made(homedepot_sample):
    df = pd.read_parquet(homedepot_sample).rename(columns={"search_term": "query", "product_title": "title"}).head(5000)
    made = len(query_like_texts(df["query"].tolist(), df["title"].tolist(), seed=0))
    assert made * 0.9 <= estimate_texts(df) <= made * 1.15


def test_the_budget_reserves_the_distillation(synthetic_csv):
    from defectnas.search.distill import S_PER_TEXT_EPOCH, S_PER_TEXT_ONCE, distill_estimate_s
    from defectnas.search.runner import build_space, prepare_tables
    from defectnas.search.trials import TrialLog

    on = config(synthetic_csv, space="serving", distill_query=2, distill_epochs=3)
    tables = prepare_tables(on)
    assert "distill" in tables and len(tables["distill"]) >= len(tables["train"])
    assert distill_estimate_s(on, tables, build_space(on)) == pytest.approx(estimate_texts(tables["distill"]) * (3 * S_PER_TEXT_EPOCH + S_PER_TEXT_ONCE))
    words = config(synthetic_csv, space="seed", distill_query=2, options={"d_model": 16, "query_backbone_layers": 0})
    assert distill_estimate_s(words, tables, build_space(words)) == 0.0  # no pre-trained query layers: nothing to distil, nothing reserved
    off = config(synthetic_csv, space="serving", distill_query=0)
    assert "distill" not in prepare_tables(off) and distill_estimate_s(off, tables, build_space(off)) == 0.0
    assert retrain_estimate_s(on, build_space(on), TrialLog(synthetic_csv.parent / "none.jsonl"), tables, {}) == 0.0  # nothing sampled yet


def test_the_distillations_estimate_scales_with_the_machines_speed_at_minilm(synthetic_csv):
    """A machine 1.7x slower at MiniLM's layers overran a 30-minute budget by 10%: the distillation took
    575 s where 354 were reserved. The noise floor's frozen pass measures that speed; the estimate scales by it."""
    from defectnas.search.distill import REF_FROZEN_S_PER_TEXT, distill_estimate_s, machine_factor
    from defectnas.search.runner import build_space, prepare_tables

    on = config(synthetic_csv, space="serving", distill_query=2, distill_epochs=4)
    tables, space = prepare_tables(on), build_space(on)
    base = distill_estimate_s(on, tables, space)
    assert distill_estimate_s(on, tables, space, {"frozen_s_per_text": None}) == base  # a floor of an earlier version: as before
    slower = {"frozen_s_per_text": 1.73 * REF_FROZEN_S_PER_TEXT}
    assert machine_factor(slower) == pytest.approx(1.73) and distill_estimate_s(on, tables, space, slower) == pytest.approx(1.73 * base)
    assert machine_factor({"frozen_s_per_text": 100 * REF_FROZEN_S_PER_TEXT}) == 4.0  # a pass slowed by something else: bounded
    assert machine_factor({"frozen_s_per_text": REF_FROZEN_S_PER_TEXT / 100}) == 0.5  # a GPU


def test_a_model_without_enough_query_layers_is_not_distilled_and_the_report_says_why(tmp_path, synthetic_pairs):
    from defectnas import DefectClassifier
    from defectnas.search.config import SearchConfig
    from defectnas.search.distill import distill_best

    from .conftest import TINY_CHILD

    clf = DefectClassifier(**{**TINY_CHILD, "epochs": 1}).fit(synthetic_pairs.head(300), synthetic_pairs.tail(100), quiet=True)
    clf.save(tmp_path / "retrain" / "abc")
    said: list[str] = []
    best = {"key": "abc", "architecture": [], "seeds": [0], "valid_ap_seeds": [0.5]}
    entry = distill_best(SearchConfig(data="x", space="seed"), None, tmp_path, best, {}, {}, tmp_path / "retrain.jsonl",
                         tmp_path / "probs", "architecture.json", True, said.append)
    assert entry["key"] == student_key("abc", 2) and "query_backbone_layers > 0" in entry["skipped"]
    assert said == [f"no distilled model: {entry['skipped']}"] and not (tmp_path / "retrain.jsonl").exists()


def test_a_student_depth_no_model_of_the_space_can_have_is_refused_before_anything_runs(tmp_path, synthetic_csv, fake_children):
    from defectnas.errors import ConfigError

    with pytest.raises(ConfigError, match="--distill-query 6: .* at most 6; give 1 to 5"):
        run_search(config(synthetic_csv, space="serving", distill_query=6), tmp_path / "a")
    with pytest.raises(ConfigError, match="at most 3"):
        run_search(config(synthetic_csv, space="serving", distill_query=3, space_options={"query_layers": [1, 2, 3]}), tmp_path / "b")
    assert fake_children == []  # nothing trained
    with pytest.raises(ConfigError, match="--distill-query .* must be 0 .off. or"):
        config(synthetic_csv, distill_query=-1)
    with pytest.raises(ConfigError, match="--distill-epochs"):
        config(synthetic_csv, distill_epochs=0)


def test_a_resumed_students_seconds_count_the_epochs_its_checkpoint_restored():
    from defectnas.search.distill import restored_seconds

    head = {"phase": "distil-query", "resumed_after_epoch": 2}
    epochs = [{"epoch": e, "seconds": 10.0 * e} for e in (1, 2, 3, 4)]
    assert restored_seconds([head, *epochs]) == 30.0  # epochs 1 and 2 ran before the kill
    assert restored_seconds([{**head, "resumed_after_epoch": 0}, *epochs]) == 0.0  # not resumed: all of it is this run's
    assert restored_seconds([]) == 0.0
