"""Benchmark of the defect classifier: accuracy against the TF-IDF floor, speed and memory.

Runs, in one go and on one query-grouped split per dataset (test = 20% of queries, held out):
the TF-IDF + logistic-regression floor, then ``dl-gs``, ``dl-jl`` and ``transfer`` with the
default options (and ``dl-gs`` with the other embedding initialisation, to measure both).
Each model trains in its own process so that its peak memory (max RSS) is its own.
Optionally (``--cli-timings``) times ``defectnas train`` and ``defectnas quickstart`` with
their defaults on the Home Depot sample. Prints a table and writes JSON.

    python benchmarks/classifier.py                      # both shared samples
    python benchmarks/classifier.py --cli-timings        # + wall time of train / quickstart
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("DEFECTNAS_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATASETS = {"homedepot": SHARED / "homedepot_sample.parquet", "crowdflower": SHARED / "crowdflower_sample.parquet",
            "esci": SHARED / "esci_sample.parquet"}
OUT = Path(__file__).resolve().parent / "results" / "classifier.json"


def _split(path: Path, seed: int):
    from defectnas.data import load_pairs, split_by_query

    parts = split_by_query(load_pairs(path), valid_frac=0.1, test_frac=0.2, seed=seed)
    return parts["train"], parts["valid"], parts["test"]


def _run_model(path: str, name: str, options: dict, seed: int, queue) -> None:
    """Child process: train one model, score the test split, report metrics, time and peak RSS."""
    import torch

    from defectnas import DefectClassifier
    from defectnas.baselines import TfidfLogReg
    from defectnas.training import defect_metrics

    torch.set_num_threads(2)
    train, valid, test = _split(Path(path), seed)
    started = time.perf_counter()
    if name == "tfidf-logreg":
        model = TfidfLogReg(seed=seed).fit(train, valid)
        probs, threshold, params, epochs = model.predict_proba(test["query"], test["title"]), model.threshold_, int(model.model_.coef_.size), 1
    else:
        model = DefectClassifier(**{**options, "seed": seed}).fit(train, valid, quiet=True)
        probs, threshold, params = model.predict_proba(test), model.threshold_, model.num_parameters()
        epochs = len(model.history_)
    seconds = time.perf_counter() - started
    m = defect_metrics(test["label"].to_numpy(), probs, threshold)
    queue.put({
        "model": name, "precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "average_precision": m["average_precision"], "params": params,
        "train_seconds": round(seconds, 1), "epochs": epochs, "pairs_per_second": round(len(train) * epochs / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "n_test": m["n"],
    })


def run_model(path: Path, name: str, options: dict, seed: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_model, args=(str(path), name, options, seed, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def time_command(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="homedepot,crowdflower")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli-timings", action="store_true", help="also time `defectnas train` and `quickstart` on Home Depot")
    parser.add_argument("--models", default="", help="comma-separated subset of the rows (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from defectnas.config import ModelConfig
    from defectnas.reporting import text_table

    default_init = ModelConfig().embedding_init
    other_init = "trained" if default_init == "minilm" else "minilm"
    models = [("tfidf-logreg", {}), ("dl-gs", {"variant": "dl-gs"}), ("dl-jl", {"variant": "dl-jl"}), ("transfer", {"variant": "transfer"}),
              (f"dl-gs ({other_init} embeddings)", {"variant": "dl-gs", "embedding_init": other_init})]
    if args.models:
        models = [m for m in models if m[0] in args.models.split(",") or m[0] == "tfidf-logreg"]  # the floor always runs
    report = {"embedding_init_default": default_init, "seed": args.seed, "cpu_threads": 2, "datasets": {}}
    columns = ["model", "precision", "recall", "f1", "average_precision", "params", "train_seconds", "pairs_per_second", "peak_rss_mb"]
    for dataset in args.datasets.split(","):
        path = DATASETS[dataset]
        rows = []
        for name, options in models:
            print(f"[{dataset}] {name} …", file=sys.stderr, flush=True)
            rows.append(run_model(path, name, options, args.seed))
            print(f"[{dataset}] {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        floor = rows[0]["f1"]
        for r in rows:
            r["beats_floor"] = r["f1"] > floor if r["model"] != "tfidf-logreg" else None
        report["datasets"][dataset] = rows
        print(f"\n## {dataset} (test split: {rows[0]['n_test']} pairs of held-out queries)\n")
        print(text_table(rows, columns))
    if args.cli_timings:
        with tempfile.TemporaryDirectory() as tmp:
            exe = [sys.executable, "-m", "defectnas.cli"]
            hd = str(DATASETS["homedepot"])
            report["train_wall_seconds"] = round(time_command(exe + ["train", "--data", hd, "--out", f"{tmp}/m", "--quiet"]), 1)
            report["quickstart_wall_seconds"] = round(time_command(exe + ["quickstart", "--data", hd, "--out", f"{tmp}/q", "--quiet"]), 1)
        print(f"\n`defectnas train` (defaults, Home Depot): {report['train_wall_seconds']} s (goal < 300 s)")
        print(f"`defectnas quickstart` (defaults, Home Depot): {report['quickstart_wall_seconds']} s (goal < 600 s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
