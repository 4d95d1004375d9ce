"""Benchmark of what a search team reads off the model: calibration, target thresholds, rating budgets.

Parts (``--parts``, comma-separated; each writes its section of ``--out-json`` when done):

- ``calibration``: on each dataset's seed-0 query split, ``train``'s default model, the TF-IDF
  floor, the GBDT and
  a fine-tuned MiniLM cross-encoder (``--bert-rows`` training pairs, 1 epoch: CPU-sized); ECE
  (10 equal-width bins) and Brier score of the test probabilities before calibration (the raw
  scores: the identity map) and after (the calibrator fitted on validation), and AP (unchanged
  by a strictly increasing map, as a check).
- ``target``: for target precisions 0.5, 0.7, 0.9, the threshold chosen on validation
  (:func:`defectnas.thresholds.target_threshold`) applied to the test queries: precision and
  recall reached, over ``--seeds`` seeds (each seed its own query split and model seed).
- ``budget``: a rating budget simulated on Home Depot: start from ``--start`` labelled pairs of
  the training split, add ``--rounds`` rounds of ``--per-round`` pairs chosen by ``select``'s
  rule (:func:`defectnas.raters.select_pairs`, uncertainty, at most 3 per query) or at random,
  retrain after each round; test AP per round, ``--seeds`` seeds; how many labels selection
  needs to reach random selection's final AP (linear interpolation between rounds).

    python benchmarks/raters.py --parts calibration,target,budget
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

SHARED = Path(os.environ.get("DEFECTNAS_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
OUT = Path(__file__).resolve().parent / "results" / "raters.json"
DATASETS = {"homedepot": "homedepot_sample.parquet", "crowdflower": "crowdflower_sample.parquet"}
TARGETS = (0.5, 0.7, 0.9)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="calibration,target,budget")
    p.add_argument("--datasets", default="homedepot,crowdflower", help="calibration and target: comma-separated")
    p.add_argument("--models", default="default,tfidf,gbdt,bert", help="calibration: comma-separated of default, tfidf, gbdt, bert")
    p.add_argument("--bert-rows", type=int, default=4000, help="calibration: cross-encoder training pairs (1 epoch)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--start", type=int, default=2000, help="budget: labelled pairs at the start")
    p.add_argument("--per-round", type=int, default=1000, help="budget: pairs added per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=0, help="epochs of the default model (0: its default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-json", default=str(OUT))
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save(args, section: str, value) -> None:
    path = Path(args.out_json)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("machine", {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": args.threads})
    data[section] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def split(dataset: str, seed: int):
    from defectnas.data import load_pairs, split_by_query

    return split_by_query(load_pairs(SHARED / DATASETS[dataset]), valid_frac=0.1, test_frac=0.2, seed=seed)


def default_model(args, train, valid, seed: int):
    from defectnas import DefectClassifier

    options = {"seed": seed, "num_threads": args.threads}
    if args.epochs:
        options["epochs"] = args.epochs
    return DefectClassifier(**options).fit(train, valid, quiet=True)


def probs_of(model, df) -> np.ndarray:
    return np.asarray(model.predict_proba(df["query"].tolist(), df["title"].tolist()), dtype=np.float64)


def scores(labels, probs) -> dict:
    from sklearn.metrics import average_precision_score, brier_score_loss

    from defectnas.training.metrics import expected_calibration_error

    return {"ece": round(float(expected_calibration_error(labels, probs)), 4),
            "brier": round(float(brier_score_loss(labels, np.clip(probs, 0, 1))), 4),
            "ap": round(float(average_precision_score(labels, probs)), 4), "mean_p": round(float(probs.mean()), 4)}


# ------------------------------------------------------------------ calibration
def calibration(args) -> dict:
    from defectnas.baselines.models import BUILDERS, Budget, Context
    from defectnas.calibration import Calibrator

    out = {}
    for dataset in args.datasets.split(","):
        parts = split(dataset, 0)
        labels = parts["test"]["label"].to_numpy()
        ctx = Context(budget=Budget(bert_rows=args.bert_rows), options={}, seed=0, threads=args.threads, quiet=True,
                      out=Path("/tmp/defectnas-raters-bench"), log=log)
        rows = []
        for name in args.models.split(","):
            started = time.time()
            model = default_model(args, parts["train"], parts["valid"], 0) if name == "default" else BUILDERS[name](parts["train"], parts["valid"], ctx)
            after = probs_of(model, parts["test"])
            fitted = model.calibrator_
            model.calibrator_ = Calibrator()  # the identity map: the raw scores
            before = probs_of(model, parts["test"])
            model.calibrator_ = fitted
            row = {"model": name, "method": fitted.method, "before": scores(labels, before), "after": scores(labels, after),
                   "test_defect_rate": round(float(labels.mean()), 4), "seconds": round(time.time() - started, 1)}
            rows.append(row)
            log(f"{dataset} {name} ({fitted.method}): ECE {row['before']['ece']:.3f} → {row['after']['ece']:.3f}, "
                f"Brier {row['before']['brier']:.4f} → {row['after']['brier']:.4f}, AP {row['after']['ap']:.4f}")
            out[dataset] = rows
            save(args, "calibration", out)
    return out


# ----------------------------------------------------------------------- target
def target(args) -> dict:
    from defectnas.thresholds import TargetUnreachable, target_threshold

    out = {}
    for dataset in args.datasets.split(","):
        runs = []
        for seed in range(args.seeds):
            parts = split(dataset, seed)
            model = default_model(args, parts["train"], parts["valid"], seed)
            pv, pt = probs_of(model, parts["valid"]), probs_of(model, parts["test"])
            yv, yt = parts["valid"]["label"].to_numpy(), parts["test"]["label"].to_numpy()
            for goal in TARGETS:
                try:
                    op = target_threshold(yv, pv, "precision", goal)
                except TargetUnreachable as e:
                    runs.append({"seed": seed, "target": goal, "reachable": False, "why": str(e)})
                    continue
                flagged = pt >= op["threshold"]
                tp = int((flagged & (yt == 1)).sum())
                runs.append({"seed": seed, "target": goal, "reachable": True, "threshold": round(op["threshold"], 5),
                             "valid_precision": round(op["precision"], 4), "valid_recall": round(op["recall"], 4),
                             "test_precision": round(tp / max(1, int(flagged.sum())), 4), "test_recall": round(tp / max(1, int(yt.sum())), 4),
                             "test_flagged": int(flagged.sum())})
                log(f"{dataset} seed {seed} target {goal}: test precision {runs[-1]['test_precision']:.3f}, recall {runs[-1]['test_recall']:.3f}")
        summary = []
        for goal in TARGETS:
            r = [x for x in runs if x["target"] == goal and x["reachable"]]
            summary.append({"target": goal, "reachable": len(r), "seeds": args.seeds,
                            **({"test_precision": round(float(np.mean([x["test_precision"] for x in r])), 4),
                                "test_precision_std": round(float(np.std([x["test_precision"] for x in r], ddof=1)), 4) if len(r) > 1 else 0.0,
                                "test_recall": round(float(np.mean([x["test_recall"] for x in r])), 4),
                                "held": sum(x["test_precision"] >= goal for x in r)} if r else {})})
        out[dataset] = {"runs": runs, "summary": summary}
        save(args, "target", out)
    return out


# ----------------------------------------------------------------------- budget
def budget(args) -> dict:
    from sklearn.metrics import average_precision_score

    from defectnas.raters import select_pairs

    curves = []
    for seed in range(args.seeds):
        parts = split("homedepot", seed)
        rng = np.random.default_rng(seed)
        train = parts["train"].reset_index(drop=True)
        start = rng.choice(len(train), size=args.start, replace=False)
        yt = parts["test"]["label"].to_numpy()
        for strategy in ("select", "random"):
            labelled = set(int(i) for i in start)
            aps = []
            for r in range(args.rounds + 1):
                model = default_model(args, train.iloc[sorted(labelled)], parts["valid"], seed)
                aps.append(round(float(average_precision_score(yt, probs_of(model, parts["test"]))), 4))
                log(f"budget seed {seed} {strategy} round {r}: {len(labelled)} labels, test AP {aps[-1]:.4f}")
                if r == args.rounds:
                    break
                free = np.array(sorted(set(range(len(train))) - labelled))
                if strategy == "random":
                    new = rng.choice(free, size=args.per_round, replace=False)
                else:
                    pool = train.iloc[free].drop(columns="label").reset_index(drop=True)
                    chosen = select_pairs(pool, probs_of(model, pool), model.threshold_, args.per_round, max_per_query=3).table
                    index = {(q, t): i for q, t, i in zip(pool["query"], pool["title"], free)}
                    new = [index[(q, t)] for q, t in zip(chosen["query"], chosen["title"])]
                labelled |= set(int(i) for i in new)
            curves.append({"seed": seed, "strategy": strategy, "labels": [args.start + k * args.per_round for k in range(args.rounds + 1)],
                           "test_ap": aps})
            save(args, "budget", {"curves": curves})
    out = budget_summary(curves)
    save(args, "budget", out)
    return out


def budget_summary(curves: list[dict]) -> dict:
    """Mean curves, the per-seed paired difference select − random per round (same start, same
    split, same seed), and the labels select needs to reach random's final mean AP (linear
    interpolation between rounds; read it together with the paired differences: on noisy curves
    a crossing can come early by chance)."""
    labels = curves[0]["labels"]
    by = {s: {c["seed"]: np.array(c["test_ap"]) for c in curves if c["strategy"] == s} for s in ("select", "random")}
    seeds = sorted(set(by["select"]) & set(by["random"]))
    mean = {s: np.mean([by[s][k] for k in seeds], axis=0) for s in by}
    diff = np.array([by["select"][k] - by["random"][k] for k in seeds])
    goal = float(mean["random"][-1])
    reach = next((i for i, v in enumerate(mean["select"]) if v >= goal), None)
    if reach is None:
        needed = None
    elif reach == 0:
        needed = labels[0]
    else:  # linear interpolation between the rounds around the crossing
        a, b = mean["select"][reach - 1], mean["select"][reach]
        needed = labels[reach - 1] + (goal - a) / max(b - a, 1e-12) * (labels[reach] - labels[reach - 1])
    later = diff[:, 1:]  # the rounds after the common start
    out = {"curves": curves, "labels": labels, "seeds": seeds,
           "mean_test_ap": {s: [round(float(v), 4) for v in m] for s, m in mean.items()},
           "paired_diff_per_round": [round(float(v), 4) for v in diff.mean(axis=0)],
           "paired_diff_std_per_round": [round(float(v), 4) for v in diff.std(axis=0, ddof=1)] if len(seeds) > 1 else None,
           "paired_diff_mean_after_start": round(float(later.mean()), 4),
           "paired_diff_seed_means": [round(float(v), 4) for v in later.mean(axis=1)],
           "random_final_ap": round(goal, 4), "labels_select_needs": None if needed is None else int(round(needed)),
           "labels_saved": None if needed is None else int(round(labels[-1] - needed))}
    log(f"budget: select − random {out['paired_diff_mean_after_start']:+.4f} AP on average after the start (seed means "
        f"{out['paired_diff_seed_means']}); random reaches {goal:.4f} with {labels[-1]} labels, select's mean curve with "
        f"{out['labels_select_needs']}")
    return out


def budget_restat(args) -> dict:
    """Recompute the budget summary from the curves in ``--out-json`` (no training)."""
    curves = json.loads(Path(args.out_json).read_text())["budget"]["curves"]
    out = budget_summary(curves)
    save(args, "budget", out)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    from defectnas.model.bert import shared_memos

    torch.set_num_threads(args.threads)
    with shared_memos():  # every model of the run shares one pass of the frozen MiniLM layers per text
        for part in args.parts.split(","):
            {"calibration": calibration, "target": target, "budget": budget, "budget-restat": budget_restat}[part](args)
    log(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
