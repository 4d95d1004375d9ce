"""Benchmark of ``defectnas audit``: throughput, peak memory, Ray, and how far the audit can be trusted.

Throughput: a result log of ``--rows`` rows (``--per-query`` products per query: the query's
judged products of the shared Home Depot sample at random positions, the rest drawn from its
catalogue; ``impressions`` falling with position) is audited from a product cache, each run in
a fresh process (``python -m defectnas.cli audit``); pairs per second exclude nothing (model
load included) and peak RSS is the process's ``ru_maxrss``. The same log at a quarter of the
rows shows whether memory grows with the log. With ``--ray``, the log also goes through a
local Ray (``--ray-address local``, one actor per core).

Honesty: the sample's test queries (the same query-grouped split ``defectnas train`` holds out,
seed 0) form a log of their judged products; the audited defect rate per query is compared with
the true rate (mean absolute error, Spearman ρ over queries) for the model and for the TF-IDF
floor (raw, and calibrated on the validation queries with the project's calibrator).

    python benchmarks/audit.py --model MODEL --cache CACHE --rows 200000
        [--data homedepot_sample.parquet] [--ray] [--json benchmarks/results/audit.json]
        [--compare-src OLD/src --repeats 2]

With ``--compare-src`` (a ``src/`` folder of another version, e.g. ``git archive COMMIT src |
tar -x -C OLD``), the full-size log is also audited by that version, back to back with this
one and alternating (A B B A …), so a before/after ratio is read at one load rather than across
runs hours apart on a shared machine; the JSON's ``compare`` block holds both versions' pairs
per second and the largest difference between their probabilities.

MODEL: a model directory trained on the sample with seed 0 (``defectnas train --data
homedepot_sample.parquet --out MODEL``); CACHE: ``defectnas cache --model MODEL --catalog
homedepot_sample.parquet --out CACHE``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build_log(data: Path, rows: int, per_query: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` shown results: rows // per_query query pages (queries of the sample, repeated
    only when there are fewer than pages), judged products first placed at random positions."""
    from defectnas.data import load_pairs

    pairs = load_pairs(data)
    rng = np.random.default_rng(seed)
    by_query = {q: part["product_id"].tolist() for q, part in pairs.groupby("query", sort=True)}
    queries = np.array(sorted(by_query))
    pages = rows // per_query
    chosen = rng.permutation(queries)[:pages] if pages <= len(queries) else rng.choice(queries, pages)
    catalog = pairs["product_id"].unique()
    q_col, p_col, pos_col, imp_col = [], [], [], []
    for q in chosen:
        judged = list(dict.fromkeys(by_query[q]))[:per_query]
        products = np.empty(per_query, dtype=object)
        slots = rng.permutation(per_query)
        products[slots[: len(judged)]] = judged
        products[slots[len(judged):]] = rng.choice(catalog, per_query - len(judged))
        searches = int(rng.zipf(1.5)) * 10
        q_col += [q] * per_query
        p_col += products.tolist()
        pos_col += list(range(1, per_query + 1))
        imp_col += [max(1, searches // k) for k in range(1, per_query + 1)]
    return pd.DataFrame({"query": q_col, "product_id": p_col, "position": pos_col, "impressions": imp_col})


def run_once(model: str, cache: str, log: Path, out: Path, extra: list[str], src: Path = ROOT / "src") -> dict:
    """One audit in a fresh process with the sources in ``src``: wall seconds, peak RSS (MiB) and
    the 1-minute load average before and after (the machine is shared: read a run beside the
    load it met)."""
    code = ("import resource, sys, time; from defectnas.cli import main; t = time.perf_counter(); rc = main(sys.argv[1:]); "
            "u = resource.getrusage(resource.RUSAGE_SELF); "
            "print('BENCH', rc, time.perf_counter() - t, u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr)")
    cmd = [sys.executable, "-c", code, "audit", "--model", model, "--cache", cache, "--log", str(log), "--out", str(out), "--quiet", *extra]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "PYTHONPATH": str(src)}
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    load_after = os.getloadavg()[0]
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("BENCH")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"audit failed: {proc.stderr[-2000:]}")
    _, rc, seconds, rss, cpu = line[-1].split()
    summary = json.loads((out / "summary.json").read_text())
    return {"seconds": round(float(seconds), 2), "peak_rss_mib": round(int(rss) / 1024, 1), "rows": summary["rows"],
            "queries": summary["overall"]["queries"], "pairs_per_second": round(summary["rows"] / float(seconds), 1),
            "scoring_pairs_per_second": summary["pairs_per_second"], "load_average_1min": [round(load_before, 2), round(load_after, 2)],
            "cpu_seconds": round(float(cpu), 2)}  # this process's user + system CPU (not Ray actors'): the cost, less swayed by load


def honesty(model: str, cache: str, data: Path, work: Path, seed: int = 0) -> list[dict]:
    """Audited vs true per-query defect rate on the held-out test queries."""
    from scipy.stats import spearmanr

    from defectnas.audit import AuditConfig, run_audit
    from defectnas.baselines import TfidfLogReg
    from defectnas.data import load_pairs, split_by_query

    parts = split_by_query(load_pairs(data), valid_frac=0.1, test_frac=0.2, seed=seed)  # as `defectnas train` splits
    test = parts["test"].reset_index(drop=True)
    test["position"] = test.groupby("query").cumcount() + 1
    log = work / "test_log.parquet"
    test[["query", "product_id", "title", "position", "label"]].to_parquet(log)
    run_audit(AuditConfig(model=model, log=str(log), out=str(work / "honesty"), cache=cache, quiet=True))
    scored = pd.read_parquet(work / "honesty" / "scored.parquet")
    rows = [_agreement("default model (dl-gs, calibrated)", scored["query"], scored["label"], scored["defect_probability"],
                       scored["is_defect"].astype(float), spearmanr)]
    # do the intervals hold the truth? per query (Poisson-binomial normal approximation) and overall (bootstrap)
    truth = test.groupby("query")["label"].mean()
    queries = pd.read_csv(work / "honesty" / "queries.csv").set_index("query").loc[truth.index]
    rows[0]["query_interval_coverage"] = round(float(((queries["rate_low"] <= truth) & (truth <= queries["rate_high"])).mean()), 4)
    overall = json.loads((work / "honesty" / "summary.json").read_text())["overall"]["unweighted"]
    rows[0]["overall_interval"] = [round(overall["low"], 4), round(overall["high"], 4)]
    rows[0]["overall_interval_holds_truth"] = bool(overall["low"] <= test["label"].mean() <= overall["high"])
    tfidf = TfidfLogReg(seed=seed).fit(parts["train"], parts["valid"])  # calibrated on the validation queries, as every model
    rows.append(_agreement(f"tfidf-logreg (floor, {tfidf.calibrator_.method}-calibrated)", test["query"], test["label"],
                           tfidf.predict_proba(test["query"].tolist(), test["title"].tolist()), None, spearmanr))
    rows.append(_agreement("tfidf-logreg (floor, raw class-balanced probability)", test["query"], test["label"],
                           tfidf.raw_proba(test["query"].tolist(), test["title"].tolist()), None, spearmanr))
    return rows


def _agreement(name, queries, labels, probs, flagged, spearmanr) -> dict:
    frame = pd.DataFrame({"q": np.asarray(queries), "y": np.asarray(labels, float), "p": np.asarray(probs, float)})
    if flagged is not None:
        frame["f"] = np.asarray(flagged, float)
    per = frame.groupby("q").mean()
    out = {"model": name, "queries": len(per), "pairs": len(frame), "true_rate": round(frame["y"].mean(), 4),
           "audited_rate": round(frame["p"].mean(), 4), "mae_per_query": round(float((per["p"] - per["y"]).abs().mean()), 4),
           "spearman_per_query": round(float(spearmanr(per["p"], per["y"]).statistic), 4),
           "mae_if_rate_0": round(float(per["y"].abs().mean()), 4),
           "mae_if_overall_rate": round(float((per["y"] - frame["y"].mean()).abs().mean()), 4)}
    if flagged is not None:
        out["flagged_rate"] = round(frame["f"].mean(), 4)
        out["mae_per_query_flagged"] = round(float((per["f"] - per["y"]).abs().mean()), 4)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "homedepot_sample.parquet"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-query", type=int, default=100)
    parser.add_argument("--ray", action="store_true", help="also audit the log through a local Ray")
    parser.add_argument("--no-quarter", action="store_true", help="skip the quarter-size run (memory growth check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare-src", help="a src/ folder of another version (e.g. git archive COMMIT src | tar -x): its audit "
                        "of the full-size log runs back to back with this version's, alternating, --repeats times each")
    parser.add_argument("--repeats", type=int, default=1, help="with --compare-src: runs of each version (order A B B A …)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "audit.json"))
    parser.add_argument("--work", help="keep the logs and audit outputs in this folder (default: a temporary one)")
    parser.add_argument("--honesty-only", action="store_true", help="only the honesty check; keep the runs already in --json")
    args = parser.parse_args()

    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rows_asked": args.rows, "per_query": args.per_query,
               "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        results["honesty"] = honesty(args.model, args.cache, Path(args.data), work)
        results["honesty_seconds"] = round(time.perf_counter() - t, 1)
        runs = []
        sizes = [] if args.honesty_only else [args.rows] if args.no_quarter else [args.rows // 4, args.rows]
        for rows in sizes:
            log = work / f"log_{rows}.parquet"
            build_log(Path(args.data), rows, args.per_query).to_parquet(log)
            runs.append({"path": "local", "threads": args.threads, **run_once(args.model, args.cache, log, work / f"out_{rows}",
                                                                             ["--threads", str(args.threads)])})
            print(runs[-1], flush=True)
        if args.compare_src and not args.honesty_only:  # before/after on the same log, back to back
            versions = [("compared", Path(args.compare_src).resolve()), ("this", ROOT / "src")]
            for r in range(args.repeats):
                for name, src in (versions if r % 2 == 0 else versions[::-1]):
                    runs.append({"path": "local", "threads": args.threads, "version": name, "src": str(src),
                                 **run_once(args.model, args.cache, log, work / f"out_{name}", ["--threads", str(args.threads)], src)})
                    print(runs[-1], flush=True)
            a = pd.read_parquet(work / "out_compared" / "scored.parquet", columns=["defect_probability"])["defect_probability"]
            b = pd.read_parquet(work / "out_this" / "scored.parquet", columns=["defect_probability"])["defect_probability"]
            results["compare"] = {"max_abs_difference": float(np.nanmax(np.abs(a.to_numpy() - b.to_numpy()))),
                                  "same_missing": bool((a.isna() == b.isna()).all())}
            for name in ("compared", "this"):
                results["compare"][f"{name}_pairs_per_second"] = [r["pairs_per_second"] for r in runs if r.get("version") == name]
                results["compare"][f"{name}_cpu_seconds"] = [r["cpu_seconds"] for r in runs if r.get("version") == name]
            print(results["compare"], flush=True)
        if args.honesty_only:
            previous = json.loads(Path(args.json).read_text())
            runs = previous["runs"]
            results.update({k: previous[k] for k in ("rows_asked", "per_query", "command", "started")})
            results["honesty_command"] = " ".join(sys.argv)
        elif args.ray:
            runs.append({"path": "ray (local, 1 actor per core)", **run_once(args.model, args.cache, log, work / "out_ray",
                                                                             ["--ray-address", "local"])})
            a = pd.read_parquet(work / f"out_{args.rows}" / "scored.parquet", columns=["defect_probability"])["defect_probability"]
            b = pd.read_parquet(work / "out_ray" / "scored.parquet", columns=["defect_probability"])["defect_probability"]
            runs[-1]["max_abs_difference_to_local"] = float(np.nanmax(np.abs(a.to_numpy() - b.to_numpy())))
            print(runs[-1], flush=True)
        results["runs"] = runs
    from defectnas.reporting import text_table

    print(text_table(runs, ["path", "rows", "queries", "seconds", "pairs_per_second", "scoring_pairs_per_second", "peak_rss_mib"]))
    print(text_table(results["honesty"], ["model", "queries", "true_rate", "audited_rate", "mae_per_query", "spearman_per_query",
                                          "mae_if_overall_rate"]))
    from defectnas.storage import atomic_write_json

    atomic_write_json(args.json, results)
    print(f"→ {args.json}")
