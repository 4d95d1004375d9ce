"""The main job, end to end: data → query-grouped split → three variants → table and plot.

Why: a newcomer's first command should show what the tool does in minutes, on their own data
or, with none at hand (a fresh machine, offline), on the ESCI sample shipped in the package:
it trains ``dl-gs``, ``dl-jl`` and ``transfer`` (and the TF-IDF floor) on the same split,
scores them on held-out queries with the same threshold rule (the first variant's
``train_seconds`` includes the one pass of the frozen pre-trained layers that all three share),
prints the precision / recall / F1 / average-precision table beside the two floors every model
must beat (TF-IDF + logistic regression, and flagging every pair: F1 = 2r/(1+r) at defect rate
r, AP = r), writes it as CSV/JSON/Markdown with a PR-curve PNG, and saves the best model.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .errors import DataError
from .timing import yield_idle_cpu_threads

DATA_ENV = "DEFECTNAS_DATA"
VARIANTS = ("dl-gs", "dl-jl", "transfer")
COLUMNS = ["model", "precision", "recall", "f1", "average_precision", "valid_ap", "threshold", "params", "train_seconds"]
FLAG_ALL = "flag every pair (floor)"
TFIDF = "tfidf-logreg (floor)"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def resolve_data(path: str | None, echo: Callable[[str], None] | None = _stderr) -> str:
    """Which data quickstart runs on: --data, else $DEFECTNAS_DATA, else the embedded ESCI sample.

    The fallback needs no network and no file beside the package; it is announced in one line
    through ``echo`` (stderr by default; ``None`` keeps quiet) with how to point at other data.
    """
    if path:
        return str(path)
    if os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV]
    from .datasets import ESCI_SAMPLE_DESCRIPTION, esci_sample_path

    sample = esci_sample_path()
    if echo is not None:
        echo(f"no --data and no ${DATA_ENV}: running on {ESCI_SAMPLE_DESCRIPTION}; "
             f"for your own pairs pass --data PATH or set {DATA_ENV}=PATH (CSV/TSV/JSONL/Parquet)")
    return str(sample)


def _source_name(data: str) -> str:
    from .datasets import esci_sample_path

    try:
        if Path(data).resolve() == esci_sample_path().resolve():
            return "the embedded ESCI sample"
    except (OSError, DataError):
        pass
    return str(data)


def run_quickstart(data: str, out: str | Path, options: dict[str, Any], seed: int = 0, quiet: bool = False,
                   load_kwargs: dict[str, Any] | None = None, echo: Callable[[str], None] = print) -> list[dict]:
    """Train and score every variant on one split; ``echo`` gets progress, stdout the table."""
    yield_idle_cpu_threads()  # before torch (and scikit-learn's OpenMP) load

    from . import DefectClassifier
    from .baselines import TfidfLogReg
    from .data import load_pairs, split_by_query, write_splits
    from .reporting import plot_pr_curves, text_table, write_results

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = load_pairs(data, **(load_kwargs or {}))
    parts = split_by_query(df, valid_frac=0.1, test_frac=0.2, seed=seed)
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    echo(f"data: {_source_name(data)} — {len(df)} pairs, {df['query'].nunique()} queries, defect rate {df['label'].mean():.3f}; "
         f"split by query: train {len(train)}, valid {len(valid)}, test {len(test)}")
    labels = test["label"].to_numpy()
    rows, curves, best = [flag_every_pair(labels)], {}, None

    started = time.time()
    floor = TfidfLogReg(seed=seed).fit(train, valid)
    probs = floor.predict_proba(test["query"], test["title"])
    rows.append({"model": TFIDF, **_scores(labels, probs, floor.threshold_), "params": int(floor.model_.coef_.size), "train_seconds": round(time.time() - started, 1)})
    curves["tfidf-logreg"] = (labels, probs)

    from .model.bert import shared_memos

    with shared_memos():  # the variants share one pass of the frozen pre-trained layers per text
        for variant in VARIANTS:
            echo(f"training {variant} …")
            started = time.time()
            clf = DefectClassifier(**{**options, "variant": variant, "seed": seed}).fit(train, valid, quiet=quiet)
            probs = clf.predict_proba(test)
            scores = _scores(labels, probs, clf.threshold_)
            rows.append({"model": variant, **scores, "valid_ap": round(float(clf.valid_ap_), 4), "params": clf.num_parameters(),
                         "train_seconds": round(time.time() - started, 1)})
            curves[variant] = (labels, probs)
            if best is None or clf.valid_ap_ > best[0]:  # chosen on validation: the test split only scores the choice
                best = (clf.valid_ap_, variant, clf)

    write_results(out, rows, COLUMNS)
    plot_pr_curves(curves, out / "pr_curve.png", title=f"Defect precision–recall on {len(test)} held-out pairs")
    best[2].save(out / "model")
    write_splits(out / "model", parts, data=str(data), seed=seed, test_frac=0.2, valid_frac=0.1)  # for evaluate --split, threshold, distill-query
    print("\n" + text_table(rows, COLUMNS))
    floors = {r["model"]: r for r in rows[:2]}
    winner = next(r for r in rows if r["model"] == best[1])
    print(f"\nbest by validation AP: {best[1]} (test F1 {winner['f1']:.3f}, AP {winner['average_precision']:.3f}; TF-IDF floor F1 "
          f"{floors[TFIDF]['f1']:.3f}, AP {floors[TFIDF]['average_precision']:.3f}; flagging every pair F1 "
          f"{floors[FLAG_ALL]['f1']:.3f}, AP {floors[FLAG_ALL]['average_precision']:.3f}), saved to {out / 'model'}; "
          f"table: {out / 'results.md'}, plot: {out / 'pr_curve.png'}")
    return rows


def flag_every_pair(labels) -> dict:
    """The row of the trivial detector that calls every pair a defect: precision r, recall 1,
    F1 = 2r/(1+r), AP = r at defect rate r — what a model's F1 and AP must beat to mean anything."""
    import numpy as np

    r = float(np.mean(labels))
    return {"model": FLAG_ALL, "precision": r, "recall": 1.0, "f1": 2 * r / (1 + r), "average_precision": r,
            "threshold": 0.0, "params": 0, "train_seconds": 0.0}


def _scores(labels, probs, threshold: float) -> dict:
    """Precision / recall / F1 at ``threshold`` and the threshold-free average precision."""
    from sklearn.metrics import average_precision_score

    from .training import defect_metrics

    m = defect_metrics(labels, probs, threshold)
    return {**{k: m[k] for k in ("precision", "recall", "f1", "threshold")},
            "average_precision": float(average_precision_score(labels, probs))}
