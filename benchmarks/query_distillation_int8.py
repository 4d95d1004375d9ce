"""Does the int8 runtime compose with a distilled query tower? Served ms of two int8 ONNX exports, interleaved.

Why: ``export --int8`` (dynamic quantization) and ``distill-query`` (fewer query layers) both cut
the query tower's cost, which dominates a request; this times a request of 1 query × 100
pre-encoded titles (the search's latency queries and titles of the seed-0 validation split) on
both exports, 1 thread, in interleaved rounds, and reads each export's measured int8 AP loss.

    defectnas export --model DEFAULT --format onnx --out A --int8 --data DATA
    defectnas export --model DISTILLED --format onnx --out B --int8 --data DATA
    python benchmarks/query_distillation_int8.py --default A --distilled B
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from query_distillation import DEFAULT_DATA, query_split, write_result  # the same split and JSON as the distillation benchmark

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--default", required=True, help="int8 export of train's default model")
    p.add_argument("--distilled", required=True, help="int8 export of its distill-query copy")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--split-seed", type=int, default=0, help="the split whose validation queries and titles are timed")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default=str(HERE / "results" / "query_distillation_int8.json"))
    args = p.parse_args(argv)

    from defectnas.search.child import latency_inputs
    from defectnas.serving.onnx_backend import OnnxScorer
    from defectnas.timing import median_ms

    parts = query_split(args)
    queries, titles = latency_inputs(parts["valid"])
    dirs = {"default int8": args.default, "distilled int8": args.distilled}
    scorers = {k: OnnxScorer(d, allow_ap_loss=True) for k, d in dirs.items()}  # no query LRU: every request encodes its query
    arrays = {k: s.encode_titles(titles) for k, s in scorers.items()}
    times: dict[str, list[float]] = {k: [] for k in scorers}
    for _ in range(args.rounds):  # interleaved, so that machine drift hits both alike
        for k, s in scorers.items():
            turn = iter(range(1 << 30))
            times[k].append(median_ms(lambda: s.score_arrays(queries[next(turn) % len(queries)], arrays[k]), 60, warmup=3))
    out = {k: {"rounds_ms": [round(x, 3) for x in v], "median_ms": round(float(np.median(v)), 3),
               "int8_ap_loss": json.loads((Path(dirs[k]) / "export.json").read_text())["quantization"]["ap_loss"]} for k, v in times.items()}
    out["speedup"] = round(out["default int8"]["median_ms"] / out["distilled int8"]["median_ms"], 2)
    print(json.dumps(out))
    write_result(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
