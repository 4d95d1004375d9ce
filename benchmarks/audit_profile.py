"""Where ``defectnas audit``'s CPU time goes: one torch thread, process CPU seconds per part.

Why CPU seconds at one thread: the benchmark machine is shared, and wall time there measures
the neighbours as much as the audit; the CPU time a part costs changes little with load. The
parts are timed by wrapping the audit's own functions (nothing else changes), so the same
script profiles an older version given its ``src/`` on PYTHONPATH (functions it lacks are
skipped).

    PYTHONPATH=src python benchmarks/audit_profile.py --model MODEL --cache CACHE --log LOG [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

t_start = time.process_time()
import torch  # noqa: E402

import defectnas.audit.report as report  # noqa: E402
import defectnas.audit.run as run  # noqa: E402
import defectnas.audit.score as score  # noqa: E402
from defectnas.timing import load_averages  # noqa: E402

clock = time.process_time
T: dict[str, float] = defaultdict(float)


def wrap(owner, name: str, label: str, generator: bool = False) -> None:
    f = getattr(owner, name, None)
    if f is None:
        return

    def timed(*a, **k):
        t = clock()
        try:
            return f(*a, **k)
        finally:
            T[label] += clock() - t

    def timed_gen(*a, **k):
        it = f(*a, **k)
        while True:
            t = clock()
            try:
                x = next(it)
            except StopIteration:
                return
            finally:
                T[label] += clock() - t
            yield x

    setattr(owner, name, timed_gen if generator else timed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--out", default="/tmp/defectnas-audit-profile")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    wrap(score, "_encode_queries", "query tower")
    wrap(score, "_score_pairs", "head and matching over pairs (cache reads included)")
    wrap(score, "score_chunk", "_chunks")
    wrap(run, "iter_log", "read and parse the log", generator=True)
    wrap(run, "_executor", "load model and cache")
    wrap(run, "write_outputs", "queries.csv, summary.json")
    wrap(report, "write_report", "report.html")
    wrap(run, "audit_log", "_audit_log")
    imports = clock() - t_start
    t, wall = clock(), time.perf_counter()
    load = load_averages()
    run.run_audit(run.AuditConfig(model=args.model, log=args.log, out=args.out, cache=args.cache, quiet=True, threads=1))
    total = clock() - t + imports
    parts = {k: v for k, v in T.items() if not k.startswith("_")}
    parts["imports (torch, pandas, defectnas)"] = imports
    inside = T["_audit_log"] - parts["read and parse the log"] - parts["query tower"] - parts["head and matching over pairs (cache reads included)"]
    parts["rest of the pass (query text, product lookups, sums, scored.parquet)"] = inside
    parts["rest"] = total - sum(parts.values())
    result = {"log": args.log, "cpu_seconds": round(total, 2), "wall_seconds": round(time.perf_counter() - wall, 2),
              "load_average_1min": [load and load[0], (load_averages() or [None])[0]], "threads": 1,
              "parts": {k: round(v, 2) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}
    print(json.dumps(result, indent=1))
    if args.json:
        from defectnas.storage import atomic_write_json

        atomic_write_json(args.json, result)
