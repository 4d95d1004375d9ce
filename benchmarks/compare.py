"""Benchmark: the full comparison table on the shared Home Depot and CrowdFlower samples.

Runs ``defectnas compare`` (in this process, through :func:`defectnas.compare.run_compare`) on
each shared sample with 2 CPU cores — the process is pinned to two cores where the machine has
more, and torch/LightGBM use 2 threads — so every model's training wall time and its latency
per 100 pairs are measured under the same conditions, in the same run. Prints each table and
which model wins F1, F1 per millisecond and F1 gained over the TF-IDF floor per millisecond, and
the F1–latency Pareto front, and writes everything (rows, split,
budget, machine) to ``benchmarks/results/compare.json``; each dataset's tables and plots (PR
curves, F1 against latency, GBDT importance) are copied to ``benchmarks/results/compare/<dataset>/``
(beside the JSON, in a folder named after it).
Nothing that holds the data's text (``predictions.parquet``, the searches' split files) is
copied: the samples' terms keep them out of the repository.

    python benchmarks/compare.py                    # full budgets (long on 2 cores: see README)
    python benchmarks/compare.py --fast             # the --fast budgets (→ results/compare_fast.json)
    python benchmarks/compare.py --datasets crowdflower --models gbdt,dl-jl --repeats 3 --out benchmarks/results/compare_repeats.json
    python benchmarks/compare.py --sweep alpha --repeats 3   # the dl-jl loss-calibration table (→ results/sweep_alpha.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("DEFECTNAS_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATASETS = {"homedepot": SHARED / "homedepot_sample.parquet", "crowdflower": SHARED / "crowdflower_sample.parquet"}
RESULTS = Path(__file__).resolve().parent / "results"
CORES = 2


def pin_cores(n: int = CORES) -> list[int]:
    """Restrict this process (and its children) to ``n`` CPU cores where the OS allows it."""
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > n:
            os.sched_setaffinity(0, set(cores[:n]))
        return sorted(os.sched_getaffinity(0))
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="homedepot,crowdflower", help="comma-separated: homedepot, crowdflower")
    parser.add_argument("--models", help="comma-separated model names (default: all that are available)")
    parser.add_argument("--fast", action="store_true", help="the --fast budgets")
    parser.add_argument("--repeats", type=int, default=1, help="seeds per model (mean ± std)")
    parser.add_argument("--sweep", choices=["alpha", "beta"], help="run the dl-jl sweep of this loss weight instead of the table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file to write (default results/compare.json or sweep_<param>.json; _fast with --fast)")
    args = parser.parse_args(argv)
    stem = f"sweep_{args.sweep}" if args.sweep else "compare"
    args.out = args.out or str(RESULTS / f"{stem}{'_fast' if args.fast else ''}.json")

    cores = pin_cores()
    import torch

    from defectnas.compare import run_compare, run_sweep, summary

    torch.set_num_threads(CORES)
    report = {"machine": {"cores_used": cores, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "fast": args.fast, "repeats": args.repeats, "seed": args.seed, "datasets": {}}
    previous = Path(args.out)
    if previous.exists():  # keep the other datasets of an earlier run with the same settings
        old = json.loads(previous.read_text(encoding="utf-8"))
        if all(old.get(k) == report[k] for k in ("fast", "repeats", "seed")):
            report["datasets"].update(old.get("datasets", {}))
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name not in DATASETS:
            parser.error(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
        path = DATASETS[name]
        if not path.exists():
            print(f"skipping {name}: {path} not found (set DEFECTNAS_SHARED)", file=sys.stderr)
            continue
        out = Path(tempfile.mkdtemp(prefix=f"defectnas-compare-{name}-"))
        print(f"\n=== {name} ({path.name}) ===", flush=True)
        started = time.perf_counter()
        echo = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        if args.sweep:
            rows = run_sweep(path, out, args.sweep, fast=args.fast, repeats=args.repeats, seed=args.seed, threads=CORES, quiet=True, echo=echo)
            entry = {"data": str(path), "rows": rows, "wall_seconds": round(time.perf_counter() - started, 1),
                     "best": max(rows, key=lambda r: r["f1"])[args.sweep]}
        else:
            rows = run_compare(path, out, args.models, fast=args.fast, repeats=args.repeats, seed=args.seed, threads=CORES, quiet=True,
                               echo=echo)
            entry = {"data": str(path), "rows": rows, "wall_seconds": round(time.perf_counter() - started, 1), **summary(rows),
                     "run": json.loads((out / "run.json").read_text(encoding="utf-8"))}
        report["datasets"][name] = entry
        keep = Path(args.out).parent / Path(args.out).stem / name  # results/compare.json → results/compare/<dataset>/
        keep.mkdir(parents=True, exist_ok=True)
        for f in [*out.glob("results.*"), *out.glob("sweep_*.*"), *out.glob("*.png"), *out.glob("run.json")]:
            shutil.copy2(f, keep / f.name)
        shutil.rmtree(out, ignore_errors=True)
        if args.sweep:
            print(f"{name}: best test F1 at {args.sweep} = {entry['best']}; {entry['wall_seconds']:.0f} s in all")
        else:
            print(f"{name}: best F1 {entry['best_f1']}, best F1 per ms {entry['best_f1_per_ms']}, best F1 over the floor per ms "
                  f"{entry.get('best_gain_per_ms', '–')}, Pareto front {', '.join(entry['pareto_front'])}; {entry['wall_seconds']:.0f} s in all")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")  # after each dataset: partial results survive
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
