"""Benchmark of the architecture search: RL against random search, search cost, final models.

Parts (``--parts``, default ``compare,cost,final``):

- ``compare``: REINFORCE and random search with the same number of children, on the same
  seeds (each seed fixes the query split, the child subset and the sampler), reward = validation
  F1. Reported per run and as mean ± std over seeds: the best F1 found, and the mean F1 of the
  last quarter of the trials (what the sampler is drawing by the end; for random search it stays
  the space's average). Also draws ``<out-json>.png``: the sliding-window F1 of both.
- ``cost``: seconds per child and the projected wall time of a 200-child search (from the
  serial ``compare`` runs), and trials/hour through 1 worker (2 torch threads), 2 worker
  processes and Ray (a local ``ray.init(num_cpus=2)``; 1 thread per child) on the same
  random-search sequence.
- ``noise``: 8 random architectures × 3 child seeds on one split — how much of a child's reward
  is its architecture, and how much is the seed (what limits any sampler at this child budget).
- ``final``: the best architecture of the first seed's RL search (``dl-rl``) and of an RL search
  with the matching layer (``dl-rl-ml``), each from the top-k retrained with the full budget,
  against ``dl-gs`` (train's hand-designed default encoder, same loss and budget) without and
  with matching, on the test split: precision, recall, F1, parameters, CPU latency.

What README's table ran (one part per call, so each writes its JSON as soon as it is done):

    python benchmarks/search.py --parts compare --seeds 0,1,2 --trials 200 --work /tmp/sb --out-json benchmarks/results/search_compare.json
    python benchmarks/search.py --parts cost --throughput-trials 16 --work /tmp/sb --out-json benchmarks/results/search_cost.json
    python benchmarks/search.py --parts noise --work /tmp/sb --out-json benchmarks/results/search_noise.json
    python benchmarks/search.py --parts final --top-k 3 --work /tmp/sb --out-json benchmarks/results/search_final.json

Prints tables and writes JSON (default ``benchmarks/results/search.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("DEFECTNAS_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
OUT = Path(__file__).resolve().parent / "results" / "search.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "homedepot_sample.parquet"), help="table of query–product pairs")
    p.add_argument("--parts", default="compare,cost,final", help="comma-separated: compare, cost, final, noise (how much of a reward is the architecture); plot: redraw the compare plot from --work")
    p.add_argument("--trials", type=int, default=200, help="children per search")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the RL/random comparison")
    p.add_argument("--child-rows", type=int, default=2000, help="training pairs per child")
    p.add_argument("--child-valid-rows", type=int, default=2000, help="validation pairs per child (0: all)")
    p.add_argument("--child-epochs", type=int, default=1, help="epochs per child")
    p.add_argument("--config", help="JSON of base model options (d_model, batch_size, ...) for children and final models")
    p.add_argument("--workers", type=int, default=1, help="workers of the compare searches")
    p.add_argument("--threads", type=int, default=2, help="torch threads per child of the compare and final searches (2: both cores to one serial child)")
    p.add_argument("--throughput-trials", type=int, default=8, help="children per throughput run (1 worker, 2 workers, Ray)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray throughput run")
    p.add_argument("--top-k", type=int, default=10, help="architectures retrained for the final models")
    p.add_argument("--final-epochs", type=int, default=0, help="epochs of final models (0: the model default, 8)")
    p.add_argument("--final-rows", type=int, default=0, help="training pairs of final models (0: all)")
    p.add_argument("--work", help="folder for the searches (default: a temporary one, removed)")
    p.add_argument("--out-json", default=str(OUT), help="where to write the results")
    return p.parse_args(argv)


def base_config(args, **kw):
    from defectnas.search.config import SearchConfig

    options = json.loads(Path(args.config).read_text()) if args.config else {}
    return SearchConfig(data=args.data, trials=args.trials, top_k=0, child_rows=args.child_rows,
                        child_valid_rows=args.child_valid_rows, child_epochs=args.child_epochs, final_epochs=args.final_epochs,
                        final_rows=args.final_rows, options=options, **kw)


def summarize(records: list[dict]) -> dict:
    f1 = [r["f1"] for r in records]
    quarter = max(1, len(f1) // 4)
    trained = [r for r in records if not r["cached"]]
    return {
        "trials": len(records),
        "best_f1": max(f1),
        "best_trial": max(records, key=lambda r: r["f1"])["trial"],
        "first_quarter_f1": statistics.mean(f1[:quarter]),
        "last_quarter_f1": statistics.mean(f1[-quarter:]),
        "cached": len(records) - len(trained),
        "seconds_per_child": statistics.mean(r["seconds"] for r in trained),
        "child_seconds_total": sum(r["seconds"] for r in trained),
    }


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


# ------------------------------------------------------------------ parts
def part_compare(args, work: Path) -> dict:
    from defectnas.search.runner import run_search

    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for strategy in ("rl", "random"):
            cfg = base_config(args, seed=seed, strategy=strategy, workers=args.workers, threads=args.threads)
            started = time.perf_counter()
            result = run_search(cfg, work / f"{strategy}-seed{seed}", resume=True, quiet=True)
            row = {"strategy": strategy, "seed": seed, **summarize(result.trials), "wall_seconds": time.perf_counter() - started}
            runs.append(row)
            print(f"  {strategy:6s} seed {seed}: best F1 {row['best_f1']:.4f}, last quarter {row['last_quarter_f1']:.4f}, "
                  f"{row['seconds_per_child']:.1f} s/child, {row['wall_seconds']:.0f} s", flush=True)
    summary = {}
    for strategy in ("rl", "random"):
        rows = [r for r in runs if r["strategy"] == strategy]
        summary[strategy] = {k: [r[k] for r in rows] for k in ("best_f1", "last_quarter_f1", "first_quarter_f1", "cached")}
    return {"runs": runs, "summary": summary}


def plot_compare(work: Path, path: Path, window: int = 25) -> None:
    """RL against random search: per strategy, the mean over seeds of the F1 of a sliding window of trials."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    for strategy, colour in (("rl", "tab:blue"), ("random", "tab:orange")):
        runs = []
        for log in sorted(work.glob(f"{strategy}-seed*/trials.jsonl")):
            f1 = [json.loads(line)["f1"] for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
            runs.append(np.convolve(f1, np.ones(window) / window, mode="valid"))
        if not runs:
            continue
        n = min(len(r) for r in runs)
        curves = np.stack([r[:n] for r in runs])
        x = np.arange(n) + window
        ax.plot(x, curves.mean(0), color=colour, label=f"{strategy} (mean of {len(runs)} seeds)")
        ax.fill_between(x, curves.min(0), curves.max(0), color=colour, alpha=0.15)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation F1, mean of the last {window} trials")
    ax.set_title("REINFORCE against random search (band: min–max over seeds)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def part_noise(args, work: Path, architectures: int = 8, child_seeds: int = 3) -> dict:
    """How much of a child's reward is its architecture: a few random architectures, each trained
    as a child with several seeds (initialisation and batch order) on the same split and rows.
    If the spread between seeds of one architecture is as wide as the spread between
    architectures, no sampler can tell good from bad at this child budget."""
    import numpy as np
    import torch

    from defectnas.search.child import evaluate_child
    from defectnas.search.runner import child_job, prepare_tables
    from defectnas.search.space import SearchSpace

    cfg = base_config(args, seed=int(args.seeds.split(",")[0]), threads=args.threads)
    tables = prepare_tables(cfg)
    space = SearchSpace(num_layers=cfg.num_layers)
    generator = torch.Generator().manual_seed(1234)
    archs = [space.sample_uniform(generator) for _ in range(architectures)]
    f1 = np.zeros((architectures, child_seeds))
    torch.set_num_threads(args.threads)
    for i, arch in enumerate(archs):
        for j in range(child_seeds):
            job = child_job(cfg, arch)
            job["options"] = {**job["options"], "seed": 1000 + j}
            f1[i, j] = evaluate_child(job, tables["child_train"], tables["child_valid"])["f1"]
        print(f"  architecture {i}: F1 over {child_seeds} seeds {np.round(f1[i], 4).tolist()}", flush=True)
    within = float(f1.var(axis=1, ddof=1).mean())  # seed noise
    between = float(f1.mean(axis=1).var(ddof=1))  # spread of the architectures' means (still holds within / seeds of noise)
    share = max(0.0, between - within / child_seeds) / (max(0.0, between - within / child_seeds) + within)
    out = {"architectures": archs, "f1": f1.tolist(), "seed_std": within ** 0.5, "architecture_mean_std": between ** 0.5,
           "architecture_share_of_variance": share}
    print(f"  seed std {out['seed_std']:.4f}, std of architecture means {out['architecture_mean_std']:.4f}: "
          f"the architecture explains ~{100 * share:.0f}% of a child's reward variance", flush=True)
    return out


def part_cost(args, work: Path, compare: dict | None) -> dict:
    from defectnas.search.runner import run_search

    out: dict = {}
    if compare:
        serial = [r for r in compare["runs"] if r["seconds_per_child"] > 0]
        per_child = statistics.mean(r["seconds_per_child"] for r in serial)
        out["seconds_per_child_serial"] = per_child
        out["projected_200_child_serial_minutes"] = per_child * 200 / 60
    runs = []
    # one worker gets both cores as torch threads; two workers (or Ray tasks) get one thread each
    backends = [("1 worker", {"workers": 1, "threads": args.threads}), ("2 workers", {"workers": 2, "threads": 1})]
    ray = None
    if not args.no_ray:
        try:
            import ray

            backends.append(("Ray (local, 2 CPUs)", {"ray_address": "auto", "workers": 2, "threads": 1}))
        except ImportError:
            print("  (Ray not installed: skipping the Ray run)")
    for name, kw in backends:
        ray_started = False
        if "ray_address" in kw:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_started = True
        cfg = base_config(args, seed=100, strategy="random", **kw)
        cfg.trials = args.throughput_trials
        started = time.perf_counter()
        try:
            result = run_search(cfg, work / f"throughput-{name.split()[0]}-{kw.get('workers', 'ray')}", quiet=True)
        finally:
            if ray_started:
                ray.shutdown()
        wall = time.perf_counter() - started
        times = sorted(r["finished_at"] for r in result.trials if "finished_at" in r)
        steady = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 2 else float("nan")
        row = {"backend": name, "trials": len(result.trials), "wall_seconds": wall, "trials_per_hour": 3600 * len(result.trials) / wall,
               "steady_seconds_per_trial": steady, "steady_trials_per_hour": 3600 / steady if steady == steady else float("nan"),
               "projected_200_child_minutes": 200 * steady / 60 if steady == steady else float("nan")}
        runs.append(row)
        print(f"  {name}: {row['trials_per_hour']:.0f} trials/hour incl. start-up, {row['steady_trials_per_hour']:.0f} steady; "
              f"200 children ≈ {row['projected_200_child_minutes']:.0f} min", flush=True)
    out["throughput"] = runs
    return out


def part_final(args, work: Path) -> dict:
    import torch

    from defectnas import DefectClassifier
    from defectnas.model.bert import shared_memos
    from defectnas.search.child import measure_latency
    from defectnas.search.runner import final_options, prepare_tables, run_search
    from defectnas.timing import median_ms
    from defectnas.training import defect_metrics

    seed = int(args.seeds.split(",")[0])
    rows = []
    for name, matching in (("dl-rl", False), ("dl-rl-ml", True)):
        cfg = base_config(args, seed=seed, strategy="rl", matching=matching, workers=args.workers, threads=args.threads)
        cfg.top_k = args.top_k
        folder = work / f"{'rl-ml' if matching else 'rl'}-seed{seed}"  # "rl-seed0" is the compare part's search
        started = time.perf_counter()
        result = run_search(cfg, folder, resume=True, quiet=True)
        rows.append({"model": name, "dir": str(result.best_dir), "search_and_retrain_seconds": time.perf_counter() - started,
                     "architecture": next(e for e in result.top_k if e["best"])["architecture"]})

    cfg = base_config(args, seed=seed)
    tables = prepare_tables(cfg)
    with shared_memos():  # the two hand-designed models share one pass of the frozen layers
        for name, matching in (("dl-gs", False), ("dl-gs + matching", True)):
            gs_dir = work / f"{name.replace(' + ', '-')}-seed{seed}"
            gs_seconds = float("nan")
            if not (gs_dir / "config.json").exists():
                started = time.perf_counter()
                clf = DefectClassifier(**{**final_options(cfg), "matching": matching}).fit(tables["train"], tables["valid"], quiet=True)
                clf.save(gs_dir)
                gs_seconds = time.perf_counter() - started
            layers = json.loads((gs_dir / "config.json").read_text())["model"]["title_layers"]
            rows.append({"model": name, "dir": str(gs_dir), "search_and_retrain_seconds": gs_seconds,
                         "architecture": f"train's default title cells: {layers}"})

    test, valid = tables["test"], tables["valid"]
    with shared_memos():  # test metrics: each text passes the frozen layers once for all models (exact)
        for row in rows:
            clf = DefectClassifier.load(row["dir"])
            m = defect_metrics(test["label"].to_numpy(), clf.predict_proba(test), clf.threshold_)
            row.update(precision=m["precision"], recall=m["recall"], f1=m["f1"], valid_f1=clf.valid_f1_,
                       params=clf.model_.num_parameters(trainable_only=True), params_total=clf.model_.num_parameters())
    torch.set_num_threads(1)
    for row in rows:  # latency: outside the memo block, the real cost
        clf = DefectClassifier.load(row["dir"])
        pairs = test.head(100)
        row.update(latency_product_ms_per_100=measure_latency(clf, valid, 11),
                   latency_pair_ms_per_100=median_ms(lambda: clf.predict_proba(pairs), 7, warmup=1))
    return {"models": rows, "test_rows": len(test)}


def main(argv=None) -> None:
    args = parse_args(argv)
    parts = set(args.parts.split(","))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="defectnas-search-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from defectnas.reporting import text_table

    options = json.loads(Path(args.config).read_text()) if args.config else {}
    results: dict = {"settings": {**vars(args), "options": options}, "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                     "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}}
    started = time.perf_counter()
    try:
        if "compare" in parts:
            print(f"RL vs random search: {args.trials} children, seeds {args.seeds}", flush=True)
            results["compare"] = part_compare(args, work)
            plot_compare(work, Path(args.out_json).with_suffix(".png"))
            s = results["compare"]["summary"]
            print(text_table([{"strategy": k, "best F1": mean_std(v["best_f1"]), "last-quarter F1": mean_std(v["last_quarter_f1"]),
                               "first-quarter F1": mean_std(v["first_quarter_f1"]), "cached": statistics.mean(v["cached"])}
                              for k, v in s.items()], ["strategy", "best F1", "last-quarter F1", "first-quarter F1", "cached"]))
        if "plot" in parts:  # redraw the RL / random plot from the searches in --work
            plot_compare(work, Path(args.out_json).with_suffix(".png"))
        if "noise" in parts:
            print("Reward noise: random architectures × child seeds", flush=True)
            results["noise"] = part_noise(args, work)
        if "cost" in parts:
            print("Search cost", flush=True)
            results["cost"] = part_cost(args, work, results.get("compare"))
            print(text_table(results["cost"]["throughput"], ["backend", "trials", "wall_seconds", "trials_per_hour",
                                                             "steady_trials_per_hour", "projected_200_child_minutes"], digits=1))
        if "final" in parts:
            print(f"Final models (top-{args.top_k} retrained) against dl-gs on the test split", flush=True)
            results["final"] = part_final(args, work)
            print(text_table(results["final"]["models"], ["model", "precision", "recall", "f1", "valid_f1", "params",
                                                          "latency_product_ms_per_100", "latency_pair_ms_per_100"]))
    finally:
        results["seconds"] = time.perf_counter() - started
        results["machine"]["load_average_at_end"] = os.getloadavg()
        out = Path(args.out_json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"results written to {out}")
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
