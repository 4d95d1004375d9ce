"""Cache benchmark: bytes per product, float16 and int8 exactness, build throughput, and batch scoring.

What it measures, in one run (``--parts``, default all):

1. ``bytes``: bytes per product of the cache for each model kind (train's default, the default
   without matching, the ``seed`` preset): as earlier versions stored it (float32, token states
   padded to ``title_max_len``), float16 padded, and as stored now (float16, only the title tokens
   there are: mean length measured with the model's tokenizer on the catalogue), and int8 (a
   byte per value + a float32 scale per stored row), computed from each kind's dimensions and
   checked against the measured caches of the model used here.
2. ``exactness``: the Home Depot test split (query-grouped, seed 0, as ``train`` splits it) scored
   through a float32 cache of its products and through each other ``--dtypes`` cache (float16,
   int8): max and mean |Δ probability|, average precision of each, and how many ``is_defect``
   decisions differ.
3. ``build``: products/s of ``defectnas cache`` building the catalogue locally and on a local Ray
   (``ray.init(num_cpus=N)``) with 1 and 2 workers, each build checked equal to the local one.
4. ``predict``: pairs/s of ``DefectClassifier.predict_proba`` on a table of distinct pairs and on
   a table of the same size made of ``--queries`` queries × ``--titles`` titles, and of
   ``predict_proba`` reading titles from the product cache (``predict --cache``).

The model is ``--model`` or, by default, ``train``'s default model (MiniLM layers under both
towers, matching) trained here for one epoch on 1,500 training queries of the sample (the test
split is never trained on). The machine is shared: every timing comes with the load average.
Prints a table and writes JSON (``--json``, default benchmarks/results/cache.json).

    python benchmarks/cache.py [--model DIR] [--parts bytes,exactness,build,predict]
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = os.environ.get("DEFECTNAS_DATA", "/work/shared/data/homedepot_sample.parquet")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def splits(data: str, seed: int) -> dict[str, pd.DataFrame]:
    from defectnas.data import load_pairs, split_by_query

    return split_by_query(load_pairs(data), valid_frac=0.1, test_frac=0.2, seed=seed)


def train_default(parts: dict, out: Path, queries: int, seed: int) -> Path:
    """train's default model, one epoch on ``queries`` training queries (the test split unseen)."""
    from defectnas import DefectClassifier

    train = parts["train"]
    chosen = train["query"].drop_duplicates().sample(frac=1.0, random_state=seed).head(queries)
    DefectClassifier(epochs=1, num_threads=1, seed=seed).fit(train[train["query"].isin(set(chosen))]).save(out)
    return out


def catalogue(pairs: pd.DataFrame) -> pd.DataFrame:
    from defectnas.serving.catalog import read_catalog

    return read_catalog(pairs[["product_id", "title"]].drop_duplicates())[0]


# ------------------------------------------------------------------------------- parts
def part_bytes(clf, caches: dict[str, Path], catalog: pd.DataFrame) -> dict:
    """Bytes per product by model kind and dtype (from dims), the measured cache, and unpadded tokens."""
    from defectnas.config import PRESETS, ModelConfig
    from defectnas.serving.cache import ProductCache

    backbone_width = 384  # MiniLM's sentence vector, carried in the pooled vector when both towers have MiniLM layers

    def per_product(cfg: ModelConfig, itemsize: int, tokens: float | None = None, row_scale: int = 0) -> float:
        """Bytes of one product: values, plus ``row_scale`` bytes per stored row (int8's float32 scales)."""
        both = bool(cfg.backbone_layers and cfg.query_backbone_layers and cfg.sentence_vector)
        v = cfg.d_model + (backbone_width if both else 0)
        if not cfg.matching:
            return v * itemsize + row_scale
        t = cfg.title_max_len if tokens is None else tokens
        return (v * itemsize + row_scale + t * (cfg.d_model * itemsize + row_scale)
                + (cfg.title_max_len if tokens is None else 8))  # mask (T bools) or an int64 offset

    kinds = {"default (train)": ModelConfig(), "default without matching": ModelConfig(matching=False),
             "seed preset": ModelConfig(**{k: v for k, v in PRESETS["seed"].items() if k in ModelConfig.__dataclass_fields__})}
    ids = clf.tokenizer_.encode(catalog["title"].tolist(), clf.model_config_.title_max_len)
    mean_tokens = float((ids != 0).sum(axis=1).mean())
    rows = []
    for name, cfg in kinds.items():
        row = {"kind": name, "float32_padded": per_product(cfg, 4), "float16_padded": per_product(cfg, 2)}
        row["float16_unpadded"] = round(per_product(cfg, 2, mean_tokens), 1) if cfg.matching else row["float16_padded"]
        row["gb_per_million"] = round(row["float16_unpadded"] * 1e6 / 1e9, 2)
        row["int8_unpadded"] = round(per_product(cfg, 1, mean_tokens if cfg.matching else None, row_scale=4), 1)
        row["int8_gb_per_million"] = round(row["int8_unpadded"] * 1e6 / 1e9, 2)
        rows.append(row)
    measured = {dtype: ProductCache(path) for dtype, path in caches.items()}
    return {"kinds": rows, "mean_title_tokens": round(mean_tokens, 2), "title_max_len": clf.model_config_.title_max_len,
            "measured": {d: {"dtype": c.dtype, "bytes_per_product": round(c.bytes_per_product, 1), "products": len(c)} for d, c in measured.items()}}


def part_exactness(model_dir: Path, test: pd.DataFrame, caches: dict[str, Path], threshold: float) -> dict:
    """The test split through each cache: probabilities compared, AP of each."""
    from sklearn.metrics import average_precision_score

    from defectnas.audit.score import ChunkScorer

    probs, seconds = {}, {}
    for dtype, cache in caches.items():
        scorer = ChunkScorer(str(model_dir), str(cache), threads=1)
        t0 = time.perf_counter()
        probs[dtype] = scorer.score(test["query"].tolist(), test["product_id"].astype(str).tolist(), test["title"].tolist())
        seconds[dtype] = time.perf_counter() - t0
    a = probs["float32"]
    labels = test["label"].to_numpy()
    out = {}
    for dtype, b in probs.items():
        if dtype == "float32":
            continue
        assert not np.isnan(a).any() and not np.isnan(b).any()
        diff = np.abs(a - b)
        out[dtype] = {"pairs": len(test), "queries": int(test["query"].nunique()), "max_abs_diff": float(diff.max()),
                      "mean_abs_diff": float(diff.mean()), "p99_abs_diff": float(np.quantile(diff, 0.99)),
                      "ap_float32": float(average_precision_score(labels, a)), f"ap_{dtype}": float(average_precision_score(labels, b)),
                      "is_defect_changed": int(((a >= threshold) != (b >= threshold)).sum()),
                      "scoring_seconds": {k: round(v, 2) for k, v in seconds.items()}, "load": load()}
    return out


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--model", help="model directory (default: train's default model, one epoch on --train-queries)")
    p.add_argument("--train-queries", type=int, default=1500)
    p.add_argument("--parts", default="bytes,exactness,build,predict")
    p.add_argument("--build-products", type=int, default=2000, help="products of the build-throughput catalogue")
    p.add_argument("--ray-workers", default="1,2", help="local Ray CPUs to build with (0: skip Ray)")
    p.add_argument("--queries", type=int, default=20, help="predict: distinct queries of the repeated table")
    p.add_argument("--titles", type=int, default=100, help="predict: distinct titles of the repeated table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtypes", default="float32,float16,int8", help="bytes/exactness: cache dtypes (float32 first: the reference)")
    p.add_argument("--work", help="keep models and caches here (default: a temporary folder, removed)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cache.json"))
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    work = Path(args.work or tempfile.mkdtemp(prefix="defectnas-cache-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')} load {load()}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    import torch

    torch.set_num_threads(1)
    result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                                "load_average_at_start": load()}, "settings": vars(args)}
    try:
        from defectnas import DefectClassifier
        from defectnas.serving.cache import build_cache

        data = splits(args.data, args.seed)
        model_dir = Path(args.model) if args.model else work / "model"
        if not (model_dir / "config.json").is_file():
            log(f"training train's default model for one epoch on {args.train_queries} training queries ...")
            train_default(data, model_dir, args.train_queries, args.seed)
        clf = DefectClassifier.load(model_dir)
        test = data["test"]
        test_catalog = catalogue(test)
        caches = {}
        if parts & {"bytes", "exactness", "predict"}:
            for dtype in args.dtypes.split(","):
                caches[dtype] = work / f"cache-test-{dtype}"
                if not (caches[dtype] / "manifest.json").exists():
                    log(f"caching the test split's {len(test_catalog)} products as {dtype} ...")
                    first = next(iter(caches.values()))
                    if first != caches[dtype] and (first / "manifest.json").exists():  # convert the first cache: the same
                        shutil.copytree(first, caches[dtype])  # encodings, stored as dtype (nothing re-encoded)
                    r = build_cache(model_dir, test_catalog, caches[dtype], dtype=dtype, clf=clf, batch_size=256)
                    result.setdefault("test_cache_build", {})[dtype] = {"products": r.count, "seconds": round(r.seconds, 1),
                                                                       "products_per_second": round(r.products_per_second, 1), "load": load()}
        if "bytes" in parts:
            result["bytes"] = part_bytes(clf, {d: c for d, c in caches.items() if d != "float32"}, test_catalog)
            log(f"bytes: {result['bytes']}")
        if "exactness" in parts:
            log(f"scoring the {len(test)} test pairs through both caches ...")
            result["exactness"] = part_exactness(model_dir, test, caches, clf.threshold_)
            log(f"exactness: {result['exactness']}")
        if "build" in parts:
            result["build"] = part_build(model_dir, data, args, work, log)
        if "predict" in parts:
            result["predict"] = part_predict(clf, data, caches["float16"], args, log)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_average_at_end"] = load()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nresults written to {args.json}")
    return 0


def part_build(model_dir: Path, data: dict, args, work: Path, log) -> dict:
    """products/s building one catalogue: locally (1 and 2 torch threads) and on local Ray (N CPUs)."""
    import torch

    from defectnas.serving.cache import ProductCache, build_cache

    pairs = pd.concat([data["train"], data["valid"], data["test"]])
    products = catalogue(pairs).sample(frac=1.0, random_state=args.seed).head(args.build_products).reset_index(drop=True)
    runs, reference = [], None
    ways = [("local, 1 thread", 1, 0), ("local, 2 threads", 2, 0)]
    ways += [(f"Ray, {n} CPU{'s' if n > 1 else ''} (local ray.init)", 1, n) for n in map(int, args.ray_workers.split(",")) if n > 0]
    for how, threads, ray_cpus in ways:
        out = work / f"build-{len(runs)}"
        shutil.rmtree(out, ignore_errors=True)
        log(f"cache build: {how}, {len(products)} products ...")
        torch.set_num_threads(threads)
        if ray_cpus:
            import ray

            ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
        try:
            t0 = time.perf_counter()
            report = build_cache(model_dir, products, out, batch_size=64, ray_address="auto" if ray_cpus else None)
            seconds = time.perf_counter() - t0
        finally:
            if ray_cpus:
                ray.shutdown()
        row = {"how": how, "products": report.count, "seconds": round(seconds, 1), "products_per_second": round(report.count / seconds, 1),
               "load": load()}
        arrays = [np.asarray(a) for a in ProductCache(out).arrays if a is not None]
        if reference is None:
            reference = arrays
        else:
            row["equal_to_local"] = all(np.array_equal(a, b) for a, b in zip(reference, arrays))
            row["max_abs_diff_to_local"] = float(max(np.abs(a.astype(np.float32) - b.astype(np.float32)).max() for a, b in zip(reference, arrays)))
        runs.append(row)
        log(f"  {row}")
    torch.set_num_threads(1)
    return {"runs": runs, "batch_size": 64, "note": "seconds include loading the model in each Ray actor; Ray's own start-up is not included"}


def part_predict(clf, data: dict, cache_dir: Path, args, log) -> dict:
    """pairs/s of predict_proba on distinct and repeated tables of the same size, pair by pair (as before) and now."""
    from defectnas.data import text_pairs
    from defectnas.serving.cache import ProductCache
    from defectnas.training import predict_logits

    test = data["test"]
    n = args.queries * args.titles
    distinct = test.drop_duplicates("query").drop_duplicates("title")
    distinct = distinct.sample(n=min(n, len(distinct)), random_state=args.seed)
    queries = test["query"].drop_duplicates().sample(n=args.queries, random_state=args.seed).tolist()
    titles = test[["product_id", "title"]].drop_duplicates("product_id").sample(n=args.titles, random_state=args.seed)
    repeated = pd.DataFrame({"query": np.repeat(queries, len(titles)), "product_id": np.tile(titles["product_id"], len(queries)),
                             "title": np.tile(titles["title"], len(queries))}).sample(frac=1.0, random_state=args.seed)
    cache = ProductCache(cache_dir)

    def pair_by_pair(df):
        q, t = text_pairs(df)
        enc = clf._encode(pd.DataFrame({"query": q, "title": t}), labels=False)
        return clf.calibrator_.transform_logits(predict_logits(clf.model_, enc.query, enc.title))

    runs, scores = [], {}
    for name, df in (("distinct", distinct), ("repeated", repeated)):
        for how, fn in (("pair by pair (before)", pair_by_pair), ("each text once (now)", clf.predict_proba),
                        ("each text once + --cache (float16)", lambda d: clf.predict_proba(d, cache=cache))):
            log(f"predict: {name} table, {how} ...")
            t0 = time.perf_counter()
            p = fn(df)
            seconds = time.perf_counter() - t0
            scores[(name, how)] = p
            runs.append({"how": f"{name}: {how}", "pairs": len(df), "queries": int(df["query"].nunique()), "titles": int(df["title"].nunique()),
                         "seconds": round(seconds, 2), "pairs_per_second": round(len(df) / seconds, 1), "load": load()})
            log(f"  {runs[-1]}")
    diffs = {name: {"now_vs_before": float(np.abs(scores[(name, "each text once (now)")] - scores[(name, "pair by pair (before)")]).max()),
                    "cache_vs_before": float(np.abs(scores[(name, "each text once + --cache (float16)")] - scores[(name, "pair by pair (before)")]).max())}
             for name in ("distinct", "repeated")}
    return {"runs": runs, "max_abs_diff": diffs}


def table(result: dict) -> str:
    lines = []
    if "bytes" in result:
        b = result["bytes"]
        lines += ["bytes per product (from dims; the measured caches: "
                  + ", ".join(f"{m['bytes_per_product']} B as {m['dtype']}" for m in b["measured"].values()) + ")",
                  "| model kind | float32 padded (before) | float16 padded | float16 unpadded (default) | GB / million | int8 unpadded | GB / million |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in b["kinds"]:
            lines.append(f"| {r['kind']} | {r['float32_padded']:.0f} | {r['float16_padded']:.0f} | {r['float16_unpadded']:.0f} | "
                         f"{r['gb_per_million']} | {r['int8_unpadded']:.0f} | {r['int8_gb_per_million']} |")
        lines.append(f"(mean title length {b['mean_title_tokens']} of {b['title_max_len']} token slots)")
    if "exactness" in result:
        for dtype, e in result["exactness"].items():
            lines += ["", f"{dtype} vs float32 cache on {e['pairs']} test pairs ({e['queries']} queries): max |Δp| {e['max_abs_diff']:.2e}, "
                          f"p99 {e['p99_abs_diff']:.2e}, mean {e['mean_abs_diff']:.2e}; AP {e['ap_float32']:.4f} → {e[f'ap_{dtype}']:.4f}; "
                          f"is_defect changed for {e['is_defect_changed']} pairs (load {e['load']})"]
    if "build" in result:
        lines += ["", "| cache build | products | seconds | products/s | same as local | load |", "|---|---:|---:|---:|---|---|"]
        for r in result["build"]["runs"]:
            lines.append(f"| {r['how']} | {r['products']} | {r['seconds']} | {r['products_per_second']} | {r.get('equal_to_local', '')} | {r['load']} |")
    if "predict" in result:
        lines += ["", "| predict | pairs | distinct queries | distinct titles | seconds | pairs/s | load |", "|---|---:|---:|---:|---:|---:|---|"]
        for r in result["predict"]["runs"]:
            lines.append(f"| {r['how']} | {r['pairs']} | {r['queries']} | {r['titles']} | {r['seconds']} | {r['pairs_per_second']} | {r['load']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
