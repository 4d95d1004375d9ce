"""The main job, end to end: data → query-grouped split → three variants → table and plot.

Why: a newcomer's first command should show what the tool does on their own data in minutes:
it trains ``dl-gs``, ``dl-jl`` and ``transfer`` (and the TF-IDF floor) on the same split,
scores them on held-out queries with the same threshold rule (the first variant's
``train_seconds`` includes the one pass of the frozen pre-trained layers that all three share), prints the precision/recall/F1
table, writes it as CSV/JSON/Markdown with a PR-curve PNG, and saves the best model.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .errors import DataError

DATA_ENV = "DEFECTNAS_DATA"
VARIANTS = ("dl-gs", "dl-jl", "transfer")
COLUMNS = ["model", "precision", "recall", "f1", "threshold", "params", "train_seconds"]


def resolve_data(path: str | None, ask: Callable[[str], str] | None = None) -> str:
    """--data, else $DEFECTNAS_DATA, else (interactively) offer the public WANDS download."""
    if path:
        return path
    if os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV]
    hint = (f"no data: pass --data PATH or set {DATA_ENV}=PATH (a CSV/TSV/JSONL/Parquet of query–product pairs), "
            "or, online, run `defectnas download wands --out data/wands` and pass --data data/wands")
    if ask is None or not sys.stdin.isatty():
        raise DataError(hint)
    answer = ask("No data given. Download the public WANDS dataset (Wayfair, ~150 MB) into ./data/wands? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise DataError(hint)
    from .data import download

    try:
        download("wands", "data/wands")
    except DataError as e:
        raise DataError(f"{e} — {hint}") from None
    return "data/wands"


def run_quickstart(data: str, out: str | Path, options: dict[str, Any], seed: int = 0, quiet: bool = False,
                   load_kwargs: dict[str, Any] | None = None, echo: Callable[[str], None] = print) -> list[dict]:
    """Train and score every variant on one split; ``echo`` gets progress, stdout the table."""

    from . import DefectClassifier
    from .baselines import TfidfLogReg
    from .data import load_pairs, split_by_query
    from .reporting import plot_pr_curves, text_table, write_results
    from .training import defect_metrics

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = load_pairs(data, **(load_kwargs or {}))
    parts = split_by_query(df, valid_frac=0.1, test_frac=0.2, seed=seed)
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    echo(f"data: {data} — {len(df)} pairs, {df['query'].nunique()} queries, defect rate {df['label'].mean():.3f}; "
         f"split by query: train {len(train)}, valid {len(valid)}, test {len(test)}")
    labels = test["label"].to_numpy()
    rows, curves, best = [], {}, None

    started = time.time()
    floor = TfidfLogReg(seed=seed).fit(train, valid)
    probs = floor.predict_proba(test["query"], test["title"])
    rows.append({"model": "tfidf-logreg (floor)", **_scores(defect_metrics(labels, probs, floor.threshold_)), "params": int(floor.model_.coef_.size), "train_seconds": round(time.time() - started, 1)})
    curves["tfidf-logreg"] = (labels, probs)

    from .model.bert import shared_memos

    with shared_memos():  # the variants share one pass of the frozen pre-trained layers per text
        for variant in VARIANTS:
            echo(f"training {variant} …")
            started = time.time()
            clf = DefectClassifier(**{**options, "variant": variant, "seed": seed}).fit(train, valid, quiet=quiet)
            probs = clf.predict_proba(test)
            metrics = defect_metrics(labels, probs, clf.threshold_)
            rows.append({"model": variant, **_scores(metrics), "params": clf.num_parameters(), "train_seconds": round(time.time() - started, 1)})
            curves[variant] = (labels, probs)
            if best is None or metrics["f1"] > best[0]:
                best = (metrics["f1"], variant, clf)

    write_results(out, rows, COLUMNS)
    plot_pr_curves(curves, out / "pr_curve.png", title=f"Defect precision–recall on {len(test)} held-out pairs")
    best[2].save(out / "model")
    print("\n" + text_table(rows, COLUMNS))
    print(f"\nbest: {best[1]} (F1 {best[0]:.3f}), saved to {out / 'model'}; table: {out / 'results.md'}, plot: {out / 'pr_curve.png'}")
    return rows


def _scores(m: dict) -> dict:
    return {k: m[k] for k in ("precision", "recall", "f1", "threshold")}
