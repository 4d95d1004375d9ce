"""After the search: retrain the top-k and the Pareto front with fresh seeds, and say what is noise.

Why retrain: a child is trained on a small budget, which ranks architectures but does not finish
them, and the best of many noisy rewards is inflated by the selection itself. So the search's
candidates are trained again from scratch with a larger budget (``final_rows`` training pairs for
``final_epochs``: on a GPU all pairs and the model's usual epochs; on a CPU, by default, 12,000
pairs for 2 epochs — three times a child's pairs, twice its epochs — so that a default search fits
in 30 minutes) under ``final_seeds`` *fresh* seeds, on the same splits:

- the ``top_k`` distinct architectures by search reward;
- the accuracy–latency **Pareto front** of all trained children (at most ``pareto_max``: the
  most accurate and evenly spaced others), each saved as an ordinary model directory
  ``pareto/<n>/`` (n = 0 is the fastest) that ``evaluate``, ``predict``, ``cache`` and ``serve``
  accept;
- ``train``'s default architecture, the reference.

``best/`` is the candidate with the best retrained *validation* metric within the latency budget
(never chosen on test), ``train``'s default included: a search that found nothing better says so and
installs the default; ``default/`` is ``train``'s default architecture as the search retrained it.
Every saved model is then timed again, all in one process in interleaved rounds
(``latency.json``), because a candidate's latency measured during its own retrain depends on what
else the machine was doing then: the front's order and each "× faster than the default" compare
models timed side by side. Then a paired bootstrap over the test queries (:mod:`.stats`) says
whether it beats ``train``'s default by more than noise. ``final.json`` holds every candidate's
search-time and retrained scores side by side — the gain over the default at search time and
after retraining, whose difference is the selection bias — and ``top_k.json`` the top-k.

Each finished retrain is appended to ``retrain.jsonl`` and its model kept under
``retrain/<key>/`` until the end, so a resumed search retrains only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..storage import append_line, atomic_write_json
from ..training.significance import FEW_QUERIES, paired_bootstrap
from .distill import DISTILLED_DIR, LATENCY_ROUNDS, distill_best, distill_estimate_s, dominated
from .plots import pareto_front, plot_final
from .space import Architecture, Space, arch_key
from .trials import TrialLog, read_jsonl

RETRAIN_LOG = "retrain.jsonl"
TOP_K_FILE = "top_k.json"
FINAL_FILE = "final.json"
FINAL_PLOT = "final.png"  # retrained models and the distilled one: test AP against served ms
BEST_DIR = "best"
PARETO_DIR = "pareto"
DEFAULT_DIR = "default"  # train's default architecture, retrained as the candidates were: the reference to compare with
LATENCY_FILE = "latency.json"  # every saved model's served ms, timed together in LATENCY_ROUNDS interleaved rounds
PROBS_DIR = "test_probs"  # <key>.npy: each retrained candidate's test probabilities (seeds × rows), for the paired test
STAMP = "architecture.json"  # written into every saved model directory: which architecture it holds


def short_key(architecture: Architecture) -> str:
    return hashlib.sha1(arch_key(architecture).encode()).hexdigest()[:12]


def select_front(trained: list[dict[str, Any]], limit: int, min_metric: float = float("-inf")) -> list[dict[str, Any]]:
    """The accuracy–latency Pareto front of trained children (by ``metric``), fastest first, at most
    ``limit``: the most accurate always, the others evenly spaced along the front among those whose
    metric is at least ``min_metric`` (a faster model that loses half the accuracy is a front point
    no search team serves, and retraining it takes minutes that sampling could use)."""
    points = [(float(r["latency_ms"]), float(r["metric"])) for r in trained]
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    if limit <= 0:
        return []
    front = [i for i in front if points[i][1] >= min_metric or i == front[-1]]
    if len(front) > limit:
        picks = {round(j * (len(front) - 1) / max(1, limit - 1)) for j in range(limit)} if limit > 1 else {len(front) - 1}
        picks.add(len(front) - 1)
        front = [front[j] for j in sorted(picks)][-limit:]
    return [trained[i] for i in front]


def candidates(cfg, space: Space, trials: TrialLog, has_test: bool, floor: dict[str, Any] | None = None):
    """What the retrains will train, read off the trials so far: the top-k, the Pareto front and
    ``train``'s default (the paired test's reference, so only when there is a test split).

    Returns ``(top, front, default, records, roles)``: ``records`` maps a short key to one trial
    record per distinct architecture (the default's is ``{"architecture", "trial": None}``, with
    ``seconds`` from ``floor`` when given), ``roles`` the key to its roles. Also used while
    sampling, to estimate how long these retrains will take (:func:`retrain_estimate_s`).
    """
    trained = sorted(trials.cache.values(), key=lambda r: r["trial"])
    top = trials.top_k(cfg.top_k)
    # a child over --latency-budget-ms is one the user said cannot be served: no retrain, no pareto/<n>/
    servable = [r for r in trained if not (cfg.latency_budget_ms and r["latency_ms"] > cfg.latency_budget_ms)]
    front = select_front(servable, cfg.pareto_max, front_min_metric(cfg, floor))
    default = {"architecture": space.default_architecture(), "trial": None}  # the reference, even outside the space
    if floor and floor.get("child_seconds"):
        default["seconds"] = floor["child_seconds"]
    roles: dict[str, set[str]] = {}
    records: dict[str, dict[str, Any]] = {}
    for role, group in ((("default", [default]),) if has_test else ()) + (("top_k", top), ("pareto", front)):
        for rec in group:
            key = short_key(rec["architecture"])
            roles.setdefault(key, set()).add(role)
            records.setdefault(key, rec)
    return top, front, default, records, roles


def front_min_metric(cfg, floor: dict[str, Any] | None) -> float:
    """The least search metric a Pareto-front child needs to be retrained: ``pareto_min_ratio`` ×
    what ``train``'s default scored under the same child seeds (the noise floor's first repeat).
    Without a floor (``--noise-repeats 0``) or with the ratio 0, any front child qualifies."""
    ref = (floor or {}).get("metric_search_seeds")
    return float("-inf") if ref is None or cfg.pareto_min_ratio <= 0 else cfg.pareto_min_ratio * float(ref)


def retrain_scale(cfg, tables) -> float:
    """How many times a child's training a retrain is: pairs × epochs × seeds, as ratios.

    A child trains ``child_rows`` pairs for ``child_epochs`` under K seeds; a retrain all of
    ``final_rows`` for the retrain's epochs (an upper bound: early stopping may end it sooner)
    under ``final_seeds``, and also scores the test split once per seed.
    """
    from ..config import TrainConfig

    epochs = cfg.final_epochs or int(cfg.options.get("epochs", TrainConfig.epochs))
    rows = len(tables["train"]) / max(1, len(tables["child_train"]))
    return rows * (epochs / cfg.child_epochs) * (cfg.final_seeds / cfg.child_seeds)


CHILD_TABLES = frozenset({"child_train", "child_valid"})  # what children and the noise floor pass through the frozen layers
FINAL_TABLES = frozenset({"train", "valid", "test"})  # ...and the retrains


def table_texts(tables, names) -> set[str]:
    """The distinct texts (queries and titles) of the tables ``names``."""
    return {t for n in names if n in tables for col in ("query", "title") for t in tables[n][col].astype(str)}


def steady_seconds(record: dict[str, Any]) -> float:
    """A child's (or floor repeat's) seconds less its one-off frozen pass (``frozen_s``): what it
    costs in a process that has memoised its texts. Logs of earlier versions lack ``frozen_s``."""
    return max(0.0, float(record.get("seconds") or 0.0) - float(record.get("frozen_s") or 0.0))


def frozen_s_per_text(floor: dict[str, Any] | None, records=()) -> float:
    """This machine's seconds per text through MiniLM's frozen layers: the noise floor's measure,
    else (no floor: ``--noise-repeats 0``) what logged children that paid a pass measured; 0 when
    neither did (an earlier version's logs)."""
    measured = float((floor or {}).get("frozen_s_per_text") or 0.0)
    if measured:
        return measured
    paid = [r for r in records if (r.get("frozen_texts") or 0) > 0]
    texts = sum(int(r["frozen_texts"]) for r in paid)
    return sum(float(r.get("frozen_s") or 0.0) for r in paid) / texts if texts else 0.0


def frozen_pass_estimate_s(tables, floor: dict[str, Any] | None, *, warm, names=FINAL_TABLES, records=()) -> float:
    """Seconds to pass the distinct texts of the tables ``names`` (the retrains': train, valid,
    test; the children's: :data:`CHILD_TABLES`) that the tables in ``warm`` do not hold through
    MiniLM's frozen layers, at :func:`frozen_s_per_text`. ``warm``: the tables the processes that
    will run the work have memoised (:meth:`.executors.FrozenLedger.warm`), so the pass is counted
    where it will be paid, not where an earlier process paid it.

    Why: the frozen states are memoised per process and shared by every model in it. A child's
    steady seconds leave that pass out, so scaling them missed it: on Home Depot `train`'s
    default retrained in 135 s where 3 × its 11 s child were counted (its 18,421 texts no child
    saw × 5.9 ms are the difference); and a search resumed in a new process fitted a child at
    "≈ 0.4 min" that took 224 s, its process passing the children's texts again, which the first
    process's noise floor had paid."""
    per_text = frozen_s_per_text(floor, records)
    if not per_text:
        return 0.0
    return len(table_texts(tables, set(names) - set(warm)) - table_texts(tables, set(warm))) * per_text


def retrain_estimate_s(cfg, space: Space, trials: TrialLog, tables, floor: dict[str, Any], upcoming: int = 0,
                       warm=frozenset()) -> float:
    """Estimated wall seconds of retraining today's candidates: each candidate's own steady child
    seconds (:func:`steady_seconds`) × :func:`retrain_scale` and the frozen pass over the texts of
    the final tables that the processes running the retrains have not memoised
    (:func:`frozen_pass_estimate_s`; ``warm``: the tables they have, by the executor's ledger), plus
    distilling the best (:func:`.distill.distill_estimate_s`) and timing every saved model side by
    side (:func:`timing_estimate_s`). The search stops sampling when what is left of
    ``--budget-minutes`` only covers this (so the budget bounds the whole search, retrains
    included); ``final.json`` records the estimate beside what the retrains really took.

    Before anything is sampled the candidates are only ``train``'s default, but the first batch
    (``upcoming`` children) will add up to ``top_k + pareto_max`` of them: they are counted at the
    noise floor's child seconds, so a budget too small for one batch and its retrains samples
    nothing. With ``upcoming`` children the children's tables count as memoised (that batch
    passes them). Without trials or a measured floor there is nothing to estimate from (0)."""
    if cfg.top_k == 0 and cfg.pareto_max == 0:
        return 0.0
    *_, records, _ = candidates(cfg, space, trials, "test" in tables, floor)
    if trials.cache:
        child = float(np.median([steady_seconds(r) for r in trials.cache.values()]))
        children = sum(steady_seconds(r) if r.get("seconds") else child for r in records.values())
        latencies = [float(r.get("latency_ms") or 0.0) for r in records.values()]
    else:
        child = float((floor or {}).get("child_seconds") or 0.0)
        if not child:
            return 0.0
        n = len(records) + min(cfg.top_k + cfg.pareto_max, upcoming)
        children = child * n
        latencies = [float((floor or {}).get("latency_ms") or 0.0)] * n
    distill = distill_estimate_s(cfg, tables, space, floor)
    if distill:  # the student is timed with the others; count it at the slowest candidate's latency
        latencies.append(max(latencies, default=0.0))
    memoised = frozenset(warm) | (CHILD_TABLES if upcoming else frozenset())
    frozen = frozen_pass_estimate_s(tables, floor, warm=memoised, records=list(trials.cache.values()))
    return retrain_scale(cfg, tables) * children + frozen + distill + timing_estimate_s(cfg, latencies)


TIMING_S_PER_MODEL = 3.0  # loading a saved model and caching its 100 titles in each round: ~3 s on 2 CPU cores (measured)


def timing_estimate_s(cfg, latencies_ms: list[float]) -> float:
    """Seconds :func:`time_models` is expected to take for models whose child latencies are
    ``latencies_ms``: per model a fixed :data:`TIMING_S_PER_MODEL` plus ``LATENCY_ROUNDS`` × (3
    warm-up + ``max(30, latency_repeats)`` timed requests) at its latency."""
    requests = LATENCY_ROUNDS * (3 + max(30, cfg.latency_repeats))
    return sum(TIMING_S_PER_MODEL + requests * ms / 1000 for ms in latencies_ms)


def finalize(cfg, space: Space, out: Path, trials: TrialLog, executor, floor: dict[str, Any], tables, quiet: bool,
             say: Callable[[str], None], left_s: Callable[[], float] | None = None) -> dict[str, Any]:
    """Retrain the candidates, install ``pareto/<n>/`` and ``best/``, run the paired test, write the reports.

    Returns ``{"top_k", "best_dir", "report"}``, ``report`` being what ``final.json`` holds ({} when
    nothing is retrained). ``left_s``: seconds left of ``--budget-minutes``, shown on the retrains'
    progress bar (None: no budget)."""
    from tqdm.auto import tqdm

    from ..progress import progress

    from .runner import final_options, final_seeds

    if not trials.cache or (cfg.top_k == 0 and cfg.pareto_max == 0):
        return {}
    has_test = "test" in tables
    top, front, default, records, roles = candidates(cfg, space, trials, has_test, floor)

    _gather_models(out)
    done = {e["key"]: e for e in read_jsonl(out / RETRAIN_LOG, require="seconds") if "key" in e}
    for k, e in done.items():
        # a model an earlier run of this search retrained and installed stays a candidate: it is paid for, and an extended
        # search (--resume with more trials or minutes) whose new top-k retrains worse must not hand over a worse best/
        if k not in records and "distilled_from" not in e and (out / "retrain" / k / "config.json").exists():
            records[k] = trials.cache.get(arch_key(e["architecture"])) or {"architecture": e["architecture"], "trial": None}
            roles[k] = {"kept"}
    # every candidate is kept as a model under retrain/<key>/: timed together at the end, the default installed as default/
    has_probs = lambda k: not has_test or (out / PROBS_DIR / f"{k}.npy").exists()  # noqa: E731
    todo = [k for k in records if k not in done or not has_probs(k)
            or not (out / "retrain" / k / "config.json").exists()]
    seeds = final_seeds(cfg)
    estimate_s = retrain_estimate_s(cfg, space, trials, tables, floor, warm=memoised_tables(executor))
    # one job per candidate and seed (candidate by candidate), so progress moves per seed and seeds can run side by side;
    # the first seed's job saves the model and times it, as the candidate's single job did
    jobs = [(k, j, {"architecture": records[k]["architecture"], "options": final_options(cfg, space, records[k]["architecture"]),
                    "seeds": [seed], "latency_repeats": cfg.latency_repeats, "threads": cfg.threads, "time_latency": j == 0,
                    "tables": {"train": "train", "valid": "valid", "test": "test" if has_test else ""},
                    "save_dir": str(out / "retrain" / k) if j == 0 else "",
                    "probs_path": str(out / PROBS_DIR / f"{k}.seed{j}.npy") if has_test else ""})
            for k in todo for j, seed in enumerate(seeds)]
    bar = progress(total=len(records) * len(seeds), initial=(len(records) - len(todo)) * len(seeds),
                   desc=f"retrain {len(records)} × {len(seeds)} seeds", unit="seed", quiet=quiet,
                   postfix=budget_postfix(left_s))
    parts: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in todo}
    try:
        for i, res in executor.map_unordered([job for _, _, job in jobs]):
            k, j, _ = jobs[i]
            parts[k][j] = res
            bar.set_postfix(budget_postfix(left_s), refresh=False)
            bar.update(1)  # after the postfix: a bar written to a file shows the values of this update
            if len(parts[k]) < len(seeds):
                continue
            res = _merge_seeds([parts[k][j] for j in range(len(seeds))])
            if has_test:
                _merge_probs(out / PROBS_DIR, k, len(seeds))
            entry = _entry(cfg, k, records[k], res, seeds)
            append_line(out / RETRAIN_LOG, json.dumps(entry))
            atomic_write_json(out / "retrain" / k / STAMP, {"key": k, "space": cfg.space, "architecture": records[k]["architecture"]})
            done[k] = entry
            with tqdm.external_write_mode():
                say(f"retrained {_role_label(roles[k], space.reference)}{space.describe(records[k]['architecture'])}: valid {cfg.reward_metric} "
                    f"{entry['valid_metric']:.4f} ± {entry['valid_metric_std']:.4f}, {entry['latency_ms']:.2f} ms/request, "
                    f"{entry['seconds']:.0f}s")
    finally:
        bar.close()
    for stale in (out / PROBS_DIR).glob("*.seed*.npy") if has_test else ():  # seeds of a candidate a killed run left unfinished
        stale.unlink(missing_ok=True)

    # the table: every candidate, search-time and retrained side by side
    default_key = short_key(default["architecture"])
    ref = done.get(default_key) if has_test else None
    search_ref = floor.get("metric_search_seeds")
    rows = []
    first_repeat = (floor.get("per_repeat") or [{}])[0]
    for k, rec in records.items():
        e = done[k]
        if rec.get("metric") is None and "default" in roles[k] and search_ref is not None:
            # train's default is not a trial: its search-time scores are the noise floor's first repeat, under the same child seeds
            rec = {**rec, "reward": floor.get("reward_search_seeds"), "metric": search_ref, "spread": first_repeat.get("spread"),
                   "latency_ms": first_repeat.get("latency_ms")}
        row = {**e, "roles": sorted(roles[k]), "trial": rec.get("trial"),
               "search_reward": rec.get("reward"), "search_metric": rec.get("metric"), "search_spread": rec.get("spread"),
               "search_latency_ms": rec.get("latency_ms")}
        if search_ref is not None and rec.get("metric") is not None:
            row["search_gain_over_default"] = round(rec["metric"] - search_ref, 6)
        if ref is not None:
            row["retrained_gain_over_default"] = round(e["valid_metric"] - ref["valid_metric"], 6)
        if "search_gain_over_default" in row and "retrained_gain_over_default" in row:
            row["selection_bias"] = round(row["search_gain_over_default"] - row["retrained_gain_over_default"], 6)
        rows.append({**row, **saved_seed_scores(cfg, e)})

    # train's default competes too: retrained as the others were, it is what best/ must beat on validation
    eligible = [r for r in rows if not (cfg.latency_budget_ms and r["latency_ms"] > cfg.latency_budget_ms)]
    if not eligible:
        eligible = rows
        say("no candidate is within the latency budget when retrained: best/ is the most accurate overall")
    best = max(eligible, key=lambda r: (r["valid_metric"], -r["latency_ms"]))
    if best["roles"] == ["default"]:
        say(f"no searched architecture scored above {space.reference} on validation when retrained: best/ is {space.reference} "
            f"(valid {cfg.reward_metric} {best['valid_metric']:.4f})")
    for r in rows:
        r["best"] = r["key"] == best["key"]

    # a faster copy of best/: its query tower distilled, on the front unless a retrained candidate dominates it
    student, skipped = None, ({"skipped": "off (--distill-query 0)"} if not cfg.distill_query else None)
    if cfg.distill_query:
        entry = distill_best(cfg, space, out, best, done, tables, out / RETRAIN_LOG, out / PROBS_DIR, STAMP, quiet, say, floor)
        if "skipped" in entry:
            skipped = {"skipped": entry["skipped"]}
        else:
            student = {**entry, "roles": ["distilled"], "trial": None, "best": False, **saved_seed_scores(cfg, entry)}
            rows.append(student)

    # every saved model timed again, side by side: what the front's order and the speed-ups below rest on
    timed = _time_together(cfg, out, [r["key"] for r in rows], tables, say)
    default_ms = float(np.median(timed[default_key])) if default_key in timed else None  # retrained only with a test split
    for r in rows:
        r["retrain_latency_ms"] = r["latency_ms"]  # as timed during its own retrain (or beside its teacher)
        r["latency_rounds_ms"] = timed[r["key"]]
        r["latency_ms"] = float(np.median(timed[r["key"]]))
        r["speedup_over_default"] = round(default_ms / max(r["latency_ms"], 1e-9), 3) if default_ms else None
    if cfg.latency_budget_ms and best["latency_ms"] > cfg.latency_budget_ms:
        say(f"note: best/ serves in {best['latency_ms']:.2f} ms/request when timed beside the others, over the "
            f"{cfg.latency_budget_ms:g} ms budget it met when timed during its retrain ({best['retrain_latency_ms']:.2f} ms)")
    if student is not None:
        student["on_front"] = not dominated(student, [r for r in rows if r is not student])
        # its teacher's latency and the speed-up from this same timing, as its own latency_ms now is
        # (the timing beside its teacher alone, right after the distillation, stays in served_ms)
        student["teacher_latency_ms"] = best["latency_ms"]
        student["speedup_over_teacher"] = round(best["latency_ms"] / max(student["latency_ms"], 1e-9), 3)

    # install pareto/<n>/ (fastest first), best/ and distilled/
    front_rows = [next(r for r in rows if r["key"] == short_key(rec["architecture"])) for rec in front]
    if student is not None and student["on_front"]:
        front_rows.append(student)
    front_rows.sort(key=lambda r: r["latency_ms"])
    _install_models(out, [r["key"] for r in front_rows], best["key"], student["key"] if student else None,
                    default_key if default_ms is not None else None)
    _write_splits(cfg, out, tables, len(front_rows), student is not None, default_ms is not None)
    for n, r in enumerate(front_rows):
        r["pareto_dir"] = str(out / PARETO_DIR / str(n))

    paired = None
    if has_test:
        test = tables["test"]
        probs_best = np.load(out / PROBS_DIR / f"{best['key']}.npy")
        probs_ref = np.load(out / PROBS_DIR / f"{default_key}.npy")
        paired = {"metric": "average_precision", "best": best["key"], "default": default_key,
                  **paired_bootstrap(test["label"].to_numpy(), test["query"].to_numpy(), probs_best, probs_ref, seed=cfg.seed)}
        paired["beats_default"] = bool(paired["ci_low"] > 0)
        paired["worse_than_default"] = bool(paired["ci_high"] < 0)
        paired["same_architecture"] = best["key"] == default_key
        paired["verdict"] = _verdict(paired)
        paired["caveat"] = _caveat(paired)
        if not paired["same_architecture"]:
            say(f"best vs {space.reference} on the test split: AP {paired['diff']:+.4f} (95% CI {paired['ci_low']:+.4f} … "
                f"{paired['ci_high']:+.4f}, {paired['queries']} queries): {paired['verdict']}{paired['caveat']}")
    searched = None  # best/ is train's default: the paired test above compares it with itself, so test the runner-up
    if paired is not None and paired["same_architecture"]:
        others = [r for r in eligible if not set(r["roles"]) & {"default", "distilled"}]
        if others:
            top_row = max(others, key=lambda r: (r["valid_metric"], -r["latency_ms"]))
            searched = {"metric": "average_precision", "candidate": top_row["key"], "default": default_key,
                        **paired_bootstrap(test["label"].to_numpy(), test["query"].to_numpy(),
                                           np.load(out / PROBS_DIR / f"{top_row['key']}.npy"), probs_ref, seed=cfg.seed)}
            searched["verdict"], searched["caveat"] = _verdict(searched), _caveat(searched)
            say(f"the most accurate searched architecture on validation ({space.describe(top_row['architecture'])}: valid "
                f"{cfg.reward_metric} {top_row['valid_metric']:.4f}) against {space.reference} on the test split: AP "
                f"{searched['diff']:+.4f} (95% CI {searched['ci_low']:+.4f} … {searched['ci_high']:+.4f}, {searched['queries']} queries): "
                f"{searched['verdict']}{searched['caveat']}")
    distilled = skipped
    if student is not None:
        distilled = {k: student.get(k) for k in ("key", "distilled_from", "query_layers", "epochs", "valid_metric", "valid_ap", "teacher_valid_ap_seed",
                                                 "test_ap", "teacher_test_ap_seed", "latency_ms", "teacher_latency_ms", "served_ms",
                                                 "speedup_over_teacher", "on_front", "seconds")}
        distilled["teacher"] = "best/ as saved: the first seed of its retrain (the *_seed fields); best's valid_metric is the mean of its seeds"
        distilled["dir"] = str(out / DISTILLED_DIR)
        if has_test:
            probs_student = np.load(out / PROBS_DIR / f"{student['key']}.npy")
            for name, other in (("vs_teacher", probs_best[:1]), ("vs_default", probs_ref)):
                test_result = paired_bootstrap(test["label"].to_numpy(), test["query"].to_numpy(), probs_student, other, seed=cfg.seed)
                test_result["verdict"] = _verdict(test_result)
                test_result["caveat"] = _caveat(test_result)
                distilled[name] = test_result
            say(f"distilled/ on the test split: AP {student['test_ap']:.4f} against its teacher's {student.get('teacher_test_ap_seed', float('nan')):.4f} "
                f"({distilled['vs_teacher']['diff']:+.4f}, 95% CI {distilled['vs_teacher']['ci_low']:+.4f} … {distilled['vs_teacher']['ci_high']:+.4f}: "
                f"{distilled['vs_teacher']['verdict']}{distilled['vs_teacher']['caveat']}) and {distilled['vs_default']['diff']:+.4f} against {space.reference} as retrained "
                f"(95% CI {distilled['vs_default']['ci_low']:+.4f} … {distilled['vs_default']['ci_high']:+.4f}: {distilled['vs_default']['verdict']}{distilled['vs_default']['caveat']})")

    top_entries = [{**next(r for r in rows if r["key"] == short_key(rec["architecture"])), "rank": rank} for rank, rec in enumerate(top, 1)]
    atomic_write_json(out / TOP_K_FILE, top_entries)
    retrain = {"candidates": len(rows), "train_rows": len(tables["train"]), "epochs": final_options(cfg, space, best["architecture"]).get("epochs"),
               "seeds": len(seeds), "estimate_s": round(estimate_s, 1), "seconds": round(sum(r["seconds"] for r in rows), 1)}
    report = {"reward_metric": cfg.reward_metric, "final_seeds": seeds, "retrain": retrain, "noise_floor": {k: v for k, v in floor.items() if k != "all_seeds"},
              "latency": {"default_ms": default_ms, "rounds": LATENCY_ROUNDS, "file": LATENCY_FILE},
              "candidates": rows, "pareto": [{"n": n, "key": r["key"], "architecture": r["architecture"], "latency_ms": r["latency_ms"],
                                              "latency_rounds_ms": r["latency_rounds_ms"], "speedup_over_default": r["speedup_over_default"],
                                              "valid_metric": r["valid_metric"], "test_ap": r.get("test_ap"),
                                              **{f: r.get(f) for f in SAVED_FIELDS},
                                              "dominated_by": [o["key"] for o in rows if dominated(r, [o])]}
                                             for n, r in enumerate(front_rows)],
              "best": best["key"], "best_dir": str(out / BEST_DIR), "default_dir": str(out / DEFAULT_DIR) if default_ms is not None else None,
              "paired_test": paired, "searched_vs_default": searched, "distilled": distilled}
    atomic_write_json(out / FINAL_FILE, report)
    plot_final(rows, out / FINAL_PLOT)
    shutil.rmtree(out / "retrain", ignore_errors=True)
    overtaken = sum(bool(e["dominated_by"]) for e in report["pareto"])
    default_row = next((r for r in rows if r["key"] == default_key), None)
    say(f"served, timed side by side ({LATENCY_ROUNDS} interleaved rounds, ms/request; test AP of the model saved): "
        + (_timed(f"{DEFAULT_DIR}/", default_row, default_ms) + "; " if default_ms is not None else "")
        + "; ".join(_timed(f"{PARETO_DIR}/{n}" + (" (distilled/)" if "distilled" in r["roles"] else ""), r, r["latency_ms"],
                           r["speedup_over_default"]) for n, r in enumerate(front_rows)))
    say(f"best: {space.describe(best['architecture'])} (valid {cfg.reward_metric} {best['valid_metric']:.4f}, the mean of its "
        f"{len(seeds)} retrain seeds; {best['latency_ms']:.2f} ms/request) saved to {out / BEST_DIR}; {len(front_rows)} Pareto-front model{'s' if len(front_rows) != 1 else ''} "
        f"under {out / PARETO_DIR}" + (f" ({overtaken} of them overtaken once retrained: final.json's pareto[].dominated_by)" if overtaken else "")
        + (f"; the most accurate within --latency-budget-ms {cfg.latency_budget_ms:g}: {space.reference}, at {default_row['latency_ms']:.2f} ms, "
           "is over it" if cfg.latency_budget_ms and default_row and default_row["latency_ms"] > cfg.latency_budget_ms else "")
        + _against_default_on_test(best, rows, default_key, paired, space.reference))
    return {"top_k": top_entries, "best_dir": out / BEST_DIR, "report": report}


def _time_together(cfg, out: Path, keys: list[str], tables, say: Callable[[str], None]) -> dict[str, list[float]]:
    """``{key: [ms of each round]}`` of every model under ``retrain/<key>/`` (:func:`time_models`),
    saved to ``latency.json``; a resumed search reuses it when it holds every key."""
    path = out / LATENCY_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["ms"]
    except (OSError, ValueError, KeyError):
        saved = {}
    if set(keys) <= set(saved):
        return {k: saved[k] for k in keys}
    say(f"timing {len(keys)} saved models side by side ({LATENCY_ROUNDS} interleaved rounds, 1 thread)")
    ms = time_models({k: out / "retrain" / k for k in keys}, tables["valid"], cfg.latency_repeats)
    from ..timing import load_averages

    load = load_averages()  # 1, 5 and 15 minutes
    atomic_write_json(path, {"timing": "serve's request of 1 query x 100 cached products, 1 thread, median of "
                                       f"{max(30, cfg.latency_repeats)} timed after warm-up in each round; the models taken in turn",
                             "rounds": LATENCY_ROUNDS, "load_average_1_5_15m": load, "ms": ms})
    return ms


def time_models(dirs: dict[str, Path], valid, repeats: int) -> dict[str, list[float]]:
    """Served ms per request of each saved model, as a child's latency is timed (1 query × 100
    cached products of the validation split, 1 thread), in ``LATENCY_ROUNDS`` interleaved rounds
    in this process (:func:`.distill.served_side_by_side`)."""
    from ..estimator import DefectClassifier
    from .distill import served_side_by_side

    return served_side_by_side({k: DefectClassifier.load(d) for k, d in dirs.items()}, valid, repeats)


SAVED_FIELDS = ("saved_seed", "saved_valid_metric", "saved_test_ap")


def saved_seed_scores(cfg, entry: dict[str, Any]) -> dict[str, Any]:
    """What the *installed* model scored. A candidate's ``valid_metric`` and ``test_ap`` are means
    over its retrain seeds (the architecture's estimate, which ranks and picks), but the folder
    (``pareto/<n>/``, ``best/``, ``default/``) holds one model, its first seed's: ``evaluate`` on
    it gives these (a new user found a front model 0.03 AP below final.json's mean and no number
    that said why). A one-seed model (the distilled student) scores as saved."""
    seeds = entry.get("seeds") or [None]
    one = len(seeds) == 1
    values = entry.get("valid_metric_seeds") or (entry.get("valid_ap_seeds") if cfg.reward_metric == "ap" else None)
    tests = entry.get("test") or []
    valid = values[0] if values else entry.get("valid_metric") if one else None
    test = tests[0]["average_precision"] if tests else entry.get("test_ap") if one else None
    return {"saved_seed": seeds[0], "saved_valid_metric": None if valid is None else round(float(valid), 6),
            "saved_test_ap": None if test is None else round(float(test), 6)}


def _timed(name: str, row: dict[str, Any] | None, ms: float, speedup: float | None = None) -> str:
    """One model of the closing "served, timed side by side" line: its ms, speed-up and saved test AP."""
    said = ([f"{speedup:.2f}x the default's speed"] if speedup is not None else []) + (
        [f"test AP {row['saved_test_ap']:.4f}"] if row and row.get("saved_test_ap") is not None else [])
    return f"{name} {ms:.2f}" + (f" ({', '.join(said)})" if said else "")


def _role_label(roles: set[str], reference: str = "train's default") -> str:
    """The start of a retrain line: which candidate this is ("train's default: ", "top-k, front: ")."""
    if "default" in roles:
        return f"{reference}: "
    return ", ".join({"top_k": "top-k", "pareto": "front"}[r] for r in sorted(roles) if r in ("top_k", "pareto")) + ": "


def _against_default_on_test(best: dict[str, Any], rows: list[dict[str, Any]], default_key: str, paired: dict[str, Any] | None,
                             reference: str = "train's default") -> str:
    """The closing line's last clause: best's test AP beside train's default's and the paired
    verdict, so a best/ that scores below the default on test says so where the search ends."""
    default = next((r for r in rows if r["key"] == default_key), {})
    if paired is None or paired.get("same_architecture") or best.get("test_ap") is None or default.get("test_ap") is None:
        return ""
    lower = " (lower on the mean)" if best["test_ap"] < default["test_ap"] else ""
    return (f"; test AP {best['test_ap']:.4f} against {reference}'s {default['test_ap']:.4f}{lower}: {paired['verdict']}{paired.get('caveat', '')}")


def _verdict(paired: dict[str, Any]) -> str:
    """What a paired test's 95% interval says of "a − b"."""
    return ("better by more than noise" if paired["ci_low"] > 0 else
            "worse by more than noise" if paired["ci_high"] < 0 else "not distinguishable from noise")


def _caveat(paired: dict[str, Any]) -> str:
    """"" or, for a verdict of "by more than noise" on fewer than FEW_QUERIES test queries, the
    reminder that the search's start-up note gave: a bootstrap over so few queries understates the
    noise (the ESCI sample's 20 test queries could not tell models 0.15 AP apart)."""
    if paired["ci_low"] <= 0 <= paired["ci_high"] or paired.get("queries", FEW_QUERIES) >= FEW_QUERIES:
        return ""
    return f" — but on {paired['queries']} test queries only, too few for the interval to be trusted"


def _entry(cfg, key: str, rec: dict[str, Any], res: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    from .runner import mean_and_spread, seed_values

    valid_metric, valid_std = mean_and_spread(seed_values(cfg, res))
    entry = {
        "key": key, "architecture": rec["architecture"], "seeds": seeds,
        "valid_metric": valid_metric, "valid_metric_std": valid_std,
        "valid_ap": round(res["ap"], 6), "valid_f1": round(res["f1"], 6), "valid_ap_seeds": res["ap_seeds"],
        "valid_metric_seeds": [round(float(v), 6) for v in seed_values(cfg, res)],
        "latency_ms": round(res["latency_ms"], 4), "params": res["params"], "seconds": round(res["seconds"], 3),
    }
    if res.get("test"):
        test_ap, test_ap_std = mean_and_spread([t["average_precision"] for t in res["test"]])
        test_f1, _ = mean_and_spread([t["f1"] for t in res["test"]])
        entry.update(test=res["test"], test_ap=test_ap, test_ap_std=test_ap_std, test_f1=test_f1)
    return entry


def minutes_left(seconds: float) -> str:
    """A progress bar's ``left=`` value: the budget's minutes left (0 once spent)."""
    return f"{max(0.0, seconds) / 60:.1f}min"


def budget_postfix(left_s: Callable[[], float] | None) -> dict[str, str]:
    """The progress bars' postfix under ``--budget-minutes``: ``{"left": ...}`` (``left_s``: the
    budget's seconds left), or nothing without a budget (``left_s`` None)."""
    return {"left": minutes_left(left_s())} if left_s is not None else {}


def memoised_tables(executor) -> frozenset[str]:
    """The tables whose frozen states the executor's processes have memoised (none for an executor without a ledger)."""
    ledger = getattr(executor, "ledger", None)
    return ledger.warm() if ledger is not None else frozenset()


def _merge_seeds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One retrain result from its seeds' jobs, in seed order (as one job over all seeds returned
    it): per-seed scores concatenated, means over them, the first seed's latency and parameters
    (its model is the one saved), seconds summed."""
    merged: dict[str, Any] = {"ap_seeds": [v for r in results for v in r["ap_seeds"]],
                              "f1_seeds": [v for r in results for v in r["f1_seeds"]],
                              "latency_ms": results[0]["latency_ms"], "params": results[0]["params"],
                              "seconds": float(sum(r["seconds"] for r in results))}
    merged["ap"], merged["f1"] = float(np.mean(merged["ap_seeds"])), float(np.mean(merged["f1_seeds"]))
    if all(r.get("test") for r in results):
        merged["test"] = [t for r in results for t in r["test"]]
    return merged


def _merge_probs(probs_dir: Path, key: str, n_seeds: int) -> None:
    """``<key>.npy`` (seeds × rows) from the seeds' ``<key>.seed<j>.npy``, which are then removed."""
    paths = [probs_dir / f"{key}.seed{j}.npy" for j in range(n_seeds)]
    stacked = np.concatenate([np.load(p) for p in paths], axis=0)
    tmp = probs_dir / f"{key}.part.npy"
    np.save(tmp, stacked)
    tmp.replace(probs_dir / f"{key}.npy")
    for p in paths:
        p.unlink(missing_ok=True)


def _write_splits(cfg, out: Path, tables, front: int, distilled: bool, default: bool) -> None:
    """``splits.json`` in best/, default/, pareto/<n>/ and distilled/: the search's queries of each split, so
    that ``evaluate --split``, ``threshold`` and ``distill-query`` use the held-out queries, as
    for a model of ``train``."""
    import pandas as pd

    from ..data import write_splits
    from ..data.load import layout_options

    parts = {"train": tables.get("distill", tables["train"]), "valid": tables["valid"],
             "test": tables.get("test", pd.DataFrame({"query": []}))}
    dirs = ([out / BEST_DIR] + ([out / DEFAULT_DIR] if default else []) + [out / PARETO_DIR / str(n) for n in range(front)]
            + ([out / DISTILLED_DIR] if distilled else []))
    for d in dirs:
        write_splits(d, parts, data=cfg.data, seed=cfg.data_seed, valid_frac=cfg.valid_frac, test_frac=cfg.test_frac, search=str(out),
                     layout=layout_options(**cfg.load_kwargs))


def _stamp(model_dir: Path) -> str | None:
    try:
        return json.loads((model_dir / STAMP).read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError):
        return None


def _gather_models(out: Path) -> None:
    """Move models installed by an earlier run (best/, pareto/<n>/) back to retrain/<key>/, and drop
    half-written retrain folders (no stamp): a resumed or extended search then reuses what it has."""
    retrain = out / "retrain"
    retrain.mkdir(exist_ok=True)
    for d in retrain.iterdir():
        if d.is_dir() and _stamp(d) != d.name:
            shutil.rmtree(d, ignore_errors=True)
    installed = [out / name for base in (BEST_DIR, DISTILLED_DIR, DEFAULT_DIR) for name in (base, base + ".old")]
    if (out / PARETO_DIR).is_dir():
        installed += sorted(p for p in (out / PARETO_DIR).iterdir() if p.is_dir())
    for d in installed:
        key = _stamp(d) if d.is_dir() else None
        if key and not (retrain / key).exists():
            os.replace(d, retrain / key)
        elif d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link to ``src`` at ``dst``, or a copy where links are refused (another device, some file systems)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _install_models(out: Path, front_keys: list[str], best_key: str, distilled_key: str | None = None,
                    default_key: str | None = None) -> None:
    """pareto/<n>/ (renamed from retrain/), best/, distilled/ and default/ (copies, as they may also be on the
    front: each an ordinary model directory, its files hard links where the file system allows, so a
    model in two places is stored once; files are only ever replaced, never written in place, so
    changing one directory later — ``threshold`` — does not change the other)."""
    shutil.rmtree(out / PARETO_DIR, ignore_errors=True)
    (out / PARETO_DIR).mkdir()
    for name, key in ((BEST_DIR, best_key), (DISTILLED_DIR, distilled_key), (DEFAULT_DIR, default_key)):
        if key is None:
            shutil.rmtree(out / name, ignore_errors=True)  # a distilled/ of an earlier run with distillation on
            continue
        tmp = out / (name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(out / "retrain" / key, tmp, copy_function=_link_or_copy)
        old = out / (name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if (out / name).exists():
            os.replace(out / name, old)
        os.replace(tmp, out / name)
        shutil.rmtree(old, ignore_errors=True)
    for n, key in enumerate(front_keys):
        os.replace(out / "retrain" / key, out / PARETO_DIR / str(n))
