"""What a pre-trained query layer costs at batch 1: reading its weights, or computing with them?

Why: the README explained the query tower's cost per request (most of a ``serve`` request) as
reading its weights (~7 MB per MiniLM layer in float32), which would make a layer applied twice
in a row nearly free the second time (its weights still in cache) and int8 weights 4× cheaper.
This times one query of ``--tokens`` word pieces through MiniLM's layers in four arrangements,
interleaved call by call so that machine drift hits all alike: six distinct layers (the default
query tower), two (a distilled one), the first two applied three times in turn (six applications
of two layers' weights) and the first applied six times. If weight reads dominated, the last two
would cost about what two and one distinct layers cost; if compute and dispatch dominate, they
cost about what six distinct layers cost.

    python benchmarks/query_layer_cost.py [--tokens 12] [--calls 300] [--threads 1]

Prints a table (median and interquartile range of each arrangement, ms per query) and writes
JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from defectnas.timing import load_averages

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=12, help="word pieces of the query (the default query cap is 12)")
    p.add_argument("--calls", type=int, default=300, help="timed calls per arrangement, interleaved")
    p.add_argument("--threads", type=int, default=1, help="torch threads (serve's default is 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=str(HERE / "results" / "query_layer_cost.json"))
    args = p.parse_args(argv)
    result = run(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


def run(args: argparse.Namespace) -> dict:
    import torch

    from defectnas.model.bert import PretrainedBackbone, read_bert_config
    from defectnas.model.pretrained import resolve_model_path

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = read_bert_config(resolve_model_path())  # MiniLM's shapes; the weights' values do not change the cost
    layers = list(PretrainedBackbone(config, config["num_hidden_layers"]).eval().encoder.layer)  # the layers serve runs
    arrangements = {"6 distinct layers": layers, "2 distinct layers": layers[:2],
                    "2 layers' weights, 6 applications": layers[:2] * 3, "1 layer's weights, 6 applications": layers[:1] * 6}
    x = torch.randn(1, args.tokens + 2, config["hidden_size"])  # + [CLS] and [SEP]
    mask = torch.ones(1, args.tokens + 2, dtype=torch.bool)

    def forward(stack) -> None:
        h = x
        for layer in stack:
            h = layer(h, mask)

    timings = {name: [] for name in arrangements}
    with torch.inference_mode():
        for stack in arrangements.values():  # warm-up
            for _ in range(10):
                forward(stack)
        for _ in range(args.calls):
            for name, stack in arrangements.items():
                start = time.perf_counter()
                forward(stack)
                timings[name].append((time.perf_counter() - start) * 1000)
    six = float(np.median(timings["6 distinct layers"]))
    rows = {name: {"median_ms": float(np.median(t)), "q25_ms": float(np.percentile(t, 25)), "q75_ms": float(np.percentile(t, 75)),
                   "ratio_to_6_distinct": float(np.median(t)) / six} for name, t in timings.items()}
    print("| arrangement | median ms | IQR ms | ratio to 6 distinct |\n|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_ms']:.2f} | {r['q25_ms']:.2f}–{r['q75_ms']:.2f} | {r['ratio_to_6_distinct']:.2f} |")
    return {"tokens": args.tokens, "calls": args.calls, "threads": args.threads, "seed": args.seed, "torch": torch.__version__,
            "load_average": load_averages(), "rows": rows}


if __name__ == "__main__":
    raise SystemExit(main())
