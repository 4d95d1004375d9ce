"""Benchmark of issue 7: can a cached two-tower model match a fine-tuned cross-encoder?

One query-grouped split per (dataset, seed) — test = 20% of queries — and on it, in one run:
the TF-IDF floor, the seed-style two-tower (pre-trained word embeddings only, ``--preset seed``),
the contextual two-tower (today's ``train`` defaults: MiniLM layers under both towers), the
fine-tuned MiniLM cross-encoder (the ``bert`` baseline with compare's full budget), and the
contextual two-tower distilled from that cross-encoder. Same threshold rule everywhere (F1-best
on the validation queries). Latency is CPU milliseconds per 100 pairs of one query, median of
repeats at 2 threads: "cached" encodes the query and scores 100 pre-encoded titles (what
``serve`` does with a ``cache``), "uncached" runs ``predict_proba`` on the raw pairs.

    python benchmarks/accuracy_gap.py                           # both samples, seeds 0 1 2
    python benchmarks/accuracy_gap.py --datasets crowdflower --seeds 0
    python benchmarks/accuracy_gap.py --work /tmp/gap --reuse OLD.json   # keep unchanged rows and teachers

Prints each row as it finishes, then a mean ± std table; writes JSON (rows appended as they come).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classifier import DATASETS, _split  # noqa: E402  (same split as the classifier benchmark)

OUT = Path(__file__).resolve().parent / "results" / "accuracy_gap.json"
MODELS = ("tfidf", "two-tower-seed", "contextual", "cross-encoder", "contextual+distill")  # and "flag-all" (no model: every pair a defect)


def latency(model, name: str, test, repeats: int) -> tuple[float, float | None]:
    """(uncached, cached) ms per 100 pairs of one query; cached is None where nothing can be cached."""
    import torch

    from defectnas.compare import measure_latency, measure_served_latency

    q = str(test["query"].iloc[0])
    titles = test["title"].head(100).tolist()
    titles += titles[: 100 - len(titles)] if len(titles) < 100 else []
    threads = torch.get_num_threads()
    uncached = measure_latency(model, [q] * len(titles), titles, threads, repeats)
    cached = None if name in ("tfidf", "cross-encoder") else measure_served_latency(model, q, titles, threads, repeats)
    return uncached, cached


def fit(name: str, train, valid, seed: int, teacher=None):
    from defectnas import DefectClassifier
    from defectnas.baselines import CrossEncoderClassifier, TfidfLogReg
    from defectnas.baselines.models import FULL
    from defectnas.config import PRESETS

    if name == "tfidf":
        return TfidfLogReg(seed=seed).fit(train, valid)
    if name == "cross-encoder":
        b = FULL
        return CrossEncoderClassifier(max_length=b.bert_max_length, epochs=b.bert_epochs, batch_size=b.bert_batch,
                                      max_train_rows=b.bert_rows, num_threads=2, seed=seed).fit(train, valid)
    options = {"seed": seed, "num_threads": 2}
    if name == "two-tower-seed":
        options.update(PRESETS["seed"])
    return DefectClassifier(**options).fit(train, valid, quiet=True, teacher=teacher if name == "contextual+distill" else None)


def params(model) -> int:
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    return int(model.model_.coef_.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="homedepot,crowdflower")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per latency (median)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--work", default="", help="folder keeping each split's fine-tuned cross-encoder (reused as teacher and row by later runs)")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out and run only the missing ones")
    ap.add_argument("--reuse", default="", help="JSON of an earlier run: rows of --reuse-models are taken from it instead of retrained")
    ap.add_argument("--reuse-models", default="tfidf,two-tower-seed,cross-encoder")
    args = ap.parse_args()

    import torch

    from defectnas.baselines.bert import quiet_transformers
    from defectnas.training import defect_metrics

    quiet_transformers().__enter__()  # for the whole run: the process ends with it
    torch.set_num_threads(2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = json.loads(out.read_text())["rows"] if out.exists() and args.resume else []
    done = {(r["dataset"], r["seed"], r["model"]) for r in rows}
    earlier = {(r["dataset"], r["seed"], r["model"]): r for r in (json.loads(Path(args.reuse).read_text())["rows"] if args.reuse else [])}
    reusable = set(args.reuse_models.split(",")) if args.reuse else set()
    names = args.models.split(",")
    for ds in args.datasets.split(","):
        for seed in map(int, args.seeds.split(",")):
            train, valid, test = _split(DATASETS[ds], seed)
            teacher_dir = Path(args.work) / f"cross-encoder-{ds}-seed{seed}" if args.work else None
            teacher = None
            if teacher_dir is not None and (teacher_dir / "config.json").exists():
                from defectnas.baselines import load_model

                teacher = load_model(teacher_dir)
            for name in names:
                if (ds, seed, name) in done:
                    continue
                if name == "flag-all":  # the floor every model must beat: call every pair a defect
                    m = defect_metrics(test["label"].to_numpy(), np.ones(len(test)), 0.5)
                    rows.append({"dataset": ds, "seed": seed, "model": name, "precision": m["precision"], "recall": m["recall"],
                                 "f1": m["f1"], "average_precision": m["average_precision"], "ms_per_100_uncached": None,
                                 "ms_per_100_cached": None, "params": 0, "train_seconds": 0.0, "test_rows": len(test),
                                 "test_queries": int(test["query"].nunique())})
                    continue
                if (ds, seed, name) in earlier and name in reusable and (name != "cross-encoder" or teacher is not None or "contextual+distill" not in names):
                    rows.append(earlier[(ds, seed, name)])
                    print(json.dumps(rows[-1]), "(reused)", flush=True)
                    continue
                if name == "contextual+distill" and teacher is None:  # the cross-encoder's row was reused or resumed
                    teacher = fit("cross-encoder", train, valid, seed)
                started = time.perf_counter()
                model = fit(name, train, valid, seed, teacher)
                seconds = time.perf_counter() - started
                if name == "cross-encoder":
                    teacher = model
                if name in ("cross-encoder", "contextual+distill") and teacher_dir is not None and not (teacher_dir / "config.json").exists():
                    teacher.save(teacher_dir)
                m = defect_metrics(test["label"].to_numpy(), model.predict_proba(test["query"].tolist(), test["title"].tolist()), model.threshold_)
                uncached, cached = latency(model, name, test, args.repeats)
                row = {"dataset": ds, "seed": seed, "model": name, "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                       "average_precision": m["average_precision"], "test_queries": int(test["query"].nunique()),
                       "ms_per_100_uncached": round(uncached, 2), "ms_per_100_cached": None if cached is None else round(cached, 2),
                       "params": params(model), "train_seconds": round(seconds, 1), "test_rows": len(test)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                from defectnas.storage import atomic_write_json

                atomic_write_json(out, {"rows": rows, "torch_threads": 2, "cpu_count": os.cpu_count()})
    print(table(rows))


def table(rows: list[dict]) -> str:
    """Mean ± std over seeds per (dataset, model), with F1 and latency relative to the cross-encoder."""
    lines = ["| dataset | model | seeds | precision | recall | F1 | F1 / cross-encoder F1 | AP | ms/100 cached | ms/100 uncached | cached speed-up vs cross-encoder | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ms = lambda v: f"{statistics.mean(v):.1f}" if v else "–"  # noqa: E731
    pm = lambda v: f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}"  # noqa: E731
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == ds]
        ce = [r for r in group if r["model"] == "cross-encoder"]
        ce_f1 = statistics.mean(r["f1"] for r in ce) if ce else None
        ce_ms = statistics.mean(r["ms_per_100_uncached"] for r in ce) if ce else None
        for name in dict.fromkeys(r["model"] for r in group):
            rs = [r for r in group if r["model"] == name]
            f1 = [r["f1"] for r in rs]
            cached = [r["ms_per_100_cached"] for r in rs if r["ms_per_100_cached"] is not None]
            ratio = f"{statistics.mean(f1) / ce_f1:.0%}" if ce_f1 else "–"
            speed = f"{ce_ms / statistics.mean(cached):.0f}×" if ce_ms and cached else "–"
            aps = [r["average_precision"] for r in rs if r.get("average_precision") is not None]
            lines.append(f"| {ds} | {name} | {len(rs)} | {pm([r['precision'] for r in rs])} | {pm([r['recall'] for r in rs])} | {pm(f1)} | {ratio} | "
                         f"{pm(aps) if aps else '–'} | {ms(cached)} | {ms([r['ms_per_100_uncached'] for r in rs if r['ms_per_100_uncached'] is not None])} | "
                         f"{speed} | {statistics.mean(r['train_seconds'] for r in rs):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
