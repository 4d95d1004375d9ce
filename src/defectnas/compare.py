"""``defectnas compare``: train every chosen model on one split and write the results table.

Why one runner: users pick a model from this table, so it must be fair and reproducible. Every
model here gets the same query-grouped split (``--seed``), the same training rows, the same
threshold rule (F1-best on validation, applied to test), the same test rows, and is timed in
the same process, twice: ``latency_ms_per_100`` scores 100 raw test pairs (``predict_proba``) at
``--threads``, as ``predict`` scores a table; ``served_ms_per_100`` is one request as ``serve``
answers it — one query against 100 products, at serve's one thread, the median of at least 30
requests cycling through up to 10 test queries after 3 warm-up ones, the search's and
``distill-query``'s policy — from a product cache for two-tower models (encode the query, score
the pre-encoded titles), from raw text for models with nothing to cache (tfidf, gbdt, bert).
F1 per millisecond uses the served latency: that is what a search team pays per request. OpenMP
threads wait passively (:func:`~defectnas.timing.yield_idle_cpu_threads`, as quickstart
and search set it): spinning threads on a busy machine inflated a served dl-jl request 35x and a
0.7 s GBDT fit to 23–140 s. Written to
``--out``: ``results.csv/json/md`` (precision, recall, F1, parameters, both latencies, F1 per
millisecond, training seconds, AP, ECE and Brier score), ``pr_curves.png``, ``f1_latency.png``,
``reliability.png`` (every model's reliability curve),
``gbdt_importance.png`` (when gbdt ran), ``predictions.parquet`` (every model's test
probabilities, one column per model, on the same rows) and ``run.json`` (split, budget,
versions). ``--repeats N`` retrains with seeds seed…seed+N−1 on the same split and reports
mean ± std (every run's own row in ``results_by_seed.csv``; a GBDT's tree count, ``params``, varies
by seed too); ``--sweep alpha|beta`` writes the
loss-calibration tables of ``dl-jl`` instead.

Models: ``dl-gs`` (grid search), ``transfer``, ``dl-jl``, ``dl-rl`` and ``dl-rl-ml`` (the RL
search, from :mod:`defectnas.search`), ``lstm``, ``coattention``, ``gbdt``, ``bert``, and the
``tfidf`` floor; how each is trained, and the :data:`FULL` and :data:`FAST` (``--fast``)
budgets, live in :mod:`defectnas.baselines.models`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .baselines.models import BUILDERS, FAST, FLOOR, FULL, MODELS, SEARCH_MODELS, Budget, Context, budget_that_ran, parse_models  # noqa: F401
from .errors import ConfigError
from .timing import yield_idle_cpu_threads
from .timing import load_averages, median_ms

COLUMNS = ["model", "precision", "recall", "f1", "average_precision", "ece", "brier", "params", "trainable_params", "latency_ms_per_100", "served_ms_per_100", "f1_per_ms",
           "gain_per_ms", "train_seconds", "threshold"]
LATENCY_PAIRS = 100
SERVED_THREADS = 1  # serve's torch threads (serving.app): a served request is timed as it runs there
SERVED_REPEATS = 30  # at least this many timed requests, after SERVED_WARMUP (the search's policy, search.child)
SERVED_WARMUP = 3
SERVED_QUERIES = 10  # distinct test queries the timed requests cycle through
SWEEPS = {"alpha": (0.25, 0.5, 1.0, 2.0, 4.0), "beta": (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)}


# ------------------------------------------------------------------ the runner
def subsample_queries(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Whole queries, in a seeded order, until ``max_rows`` rows (0: everything)."""
    if not max_rows or len(df) <= max_rows:
        return df
    queries = df["query"].drop_duplicates().to_numpy()
    order = queries[np.random.default_rng(seed).permutation(len(queries))]
    sizes = df.groupby("query").size().reindex(order).to_numpy()
    keep = set(order[: int(np.searchsorted(np.cumsum(sizes), max_rows)) + 1])
    return df[df["query"].isin(keep)].reset_index(drop=True)


def prepare_split(data, seed: int, budget: Budget, load_kwargs: dict | None = None) -> dict[str, pd.DataFrame]:
    """Load, split by query (valid 10%, test 20% of queries), cap each split's rows (whole queries) per the budget."""
    from .data import load_pairs, split_by_query

    df = data if isinstance(data, pd.DataFrame) else load_pairs(data, **(load_kwargs or {}))
    parts = split_by_query(df, valid_frac=0.1, test_frac=0.2, seed=seed)
    for name, cap in (("train", budget.max_train_rows), ("valid", budget.max_valid_rows), ("test", budget.max_test_rows)):
        parts[name] = subsample_queries(parts[name], cap, seed)
    return parts


def fingerprint(df: pd.DataFrame) -> str:
    """SHA-1 of the (query, title, label) rows in order: proof that two scorings saw the same rows."""
    h = hashlib.sha1()
    for q, t, y in zip(df["query"], df["title"], df["label"]):
        h.update(f"{q}\t{t}\t{y}\n".encode("utf-8"))
    return h.hexdigest()


def measure_latency(model, queries: list[str], titles: list[str], threads: int = 2, repeats: int = 9) -> float:
    """Median milliseconds of ``predict_proba`` (raw text in, probabilities out) on these pairs."""
    return median_ms(lambda: model.predict_proba(queries, titles), repeats, threads)


def measure_served_latency(model, queries: str | list[str], titles: list[str], threads: int = SERVED_THREADS,
                           repeats: int = SERVED_REPEATS) -> float:
    """Median milliseconds of one request as ``serve`` answers it: one query (successive requests
    cycle through ``queries``) against ``titles``, at ``threads`` (serve's one by default), at least
    :data:`SERVED_REPEATS` timed requests after :data:`SERVED_WARMUP`. A two-tower model encodes the
    query and scores the pre-encoded titles (a product cache); a model with nothing to cache
    (tfidf, gbdt, bert) scores the request's pairs from raw text."""
    from .serving.encoding import request_latency_ms

    queries = [queries] if isinstance(queries, str) else list(queries)
    repeats = max(SERVED_REPEATS, repeats)
    clf = getattr(model, "best_", model)  # dl-gs: the grid's winner
    if hasattr(getattr(clf, "model_", None), "encode_title"):
        return request_latency_ms(clf, queries, titles, repeats, threads, warmup=SERVED_WARMUP)
    turn = iter(range(1 << 62))
    return median_ms(lambda: model.predict_proba([queries[next(turn) % len(queries)]] * len(titles), titles), repeats, threads,
                     warmup=SERVED_WARMUP)


def num_parameters(model, trainable_only: bool = False) -> int:
    """All parameters (what is stored and loaded), or only those training changed (a frozen embedding table is not)."""
    import torch

    net = getattr(getattr(model, "best_", model), "model_", None)  # the torch module (dl-gs: the grid winner's)
    if trainable_only and isinstance(net, torch.nn.Module):
        return int(sum(p.numel() for p in net.parameters() if p.requires_grad))
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    return int(model.model_.coef_.size)  # the TF-IDF floor: one weight per feature


def run_once(names: list[str], parts: dict[str, pd.DataFrame], ctx: Context) -> tuple[list[dict], dict[str, np.ndarray], dict[str, Any]]:
    """Fit each model, score the test split, then time them all: (rows, test probabilities, models)."""
    import torch

    from .training import defect_metrics

    train, valid, test = parts["train"], parts["valid"], parts["test"]
    labels = test["label"].to_numpy()
    rows, probs, models = [], {}, {}
    for name in names:
        ctx.log(f"[seed {ctx.seed}] training {name} on {len(train)} pairs …")
        torch.set_num_threads(ctx.threads)
        started = time.perf_counter()
        model = BUILDERS[name](train, valid, ctx)
        seconds = time.perf_counter() - started
        p = np.asarray(model.predict_proba(test["query"].tolist(), test["title"].tolist()), dtype=np.float64)
        if p.shape != (len(test),):
            raise RuntimeError(f"{name} returned {p.shape} probabilities for {len(test)} test rows")
        m = defect_metrics(labels, p, model.threshold_)
        rows.append({"model": name, "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                     "average_precision": m["average_precision"], "ece": m["ece"], "brier": m["brier"], "params": num_parameters(model),
                     "trainable_params": num_parameters(model, trainable_only=True),
                     "train_seconds": round(seconds, 1), "threshold": m["threshold"], "n_test": m["n"]})
        probs[name], models[name] = p, model
        ctx.log(f"[seed {ctx.seed}] {name}: F1 {m['f1']:.3f} (P {m['precision']:.3f}, R {m['recall']:.3f}) in {seconds:.0f} s")
    sample = test.head(LATENCY_PAIRS)
    sample = pd.concat([sample] * -(-LATENCY_PAIRS // len(sample)), ignore_index=True).head(LATENCY_PAIRS)
    q, t = sample["query"].tolist(), sample["title"].tolist()
    served_queries = list(dict.fromkeys(q))[:SERVED_QUERIES]
    for row in rows:  # all timed here, one after another, on the same pairs and threads
        model = models[row["model"]]
        row["served_ms_per_100"] = measure_served_latency(model, served_queries, t)  # one request: one query, 100 products, 1 thread
        row["latency_ms_per_100"] = measure_latency(model, q, t, ctx.threads, ctx.budget.latency_repeats)
        row["f1_per_ms"] = row["f1"] / max(row["served_ms_per_100"], 1e-9)
    floor = next((r["f1"] for r in rows if r["model"] == FLOOR), None)
    if floor is not None:  # what a model adds over the TF-IDF floor, per served ms: a tiny model at the floor earns ~0
        for row in rows:
            row["gain_per_ms"] = (row["f1"] - floor) / max(row["served_ms_per_100"], 1e-9)
    return rows, probs, models


def aggregate(runs: list[list[dict]]) -> list[dict]:
    """Mean over repeats per model, with ``<metric>_std`` columns when there is more than one —
    parameters too: a GBDT's early-stopped tree count differs by seed (122 to 7,686 nodes)."""
    out = []
    for i, first in enumerate(runs[0]):
        row = {"model": first["model"], "n_test": first["n_test"], "repeats": len(runs)}
        for key in ("params", "trainable_params"):  # whole numbers while every seed agrees (the two-tower models)
            values = [run[i][key] for run in runs]
            row[key] = values[0] if len(set(values)) == 1 else float(np.mean(values))
            if len(runs) > 1:
                row[f"{key}_std"] = float(np.std(values, ddof=1))
        for key in ("precision", "recall", "f1", "average_precision", "ece", "brier", "latency_ms_per_100", "served_ms_per_100", "f1_per_ms", "gain_per_ms", "train_seconds",
                    "threshold"):
            if key not in first:
                continue
            values = [run[i][key] for run in runs]
            row[key] = float(np.mean(values))
            if len(runs) > 1:
                row[f"{key}_std"] = float(np.std(values, ddof=1))
        out.append(row)
    return out


def pareto_front(rows: list[dict]) -> list[str]:
    """Models no other model beats on both F1 and served latency, fastest first: the only sensible picks."""
    front = [r for r in rows if not any(o["f1"] >= r["f1"] and o["served_ms_per_100"] <= r["served_ms_per_100"]
                                        and (o["f1"], o["served_ms_per_100"]) != (r["f1"], r["served_ms_per_100"]) for o in rows)]
    return [r["model"] for r in sorted(front, key=lambda r: r["served_ms_per_100"])]


def summary(rows: list[dict]) -> dict[str, Any]:
    """Which model wins F1, F1 per served ms, F1 gained over the floor per ms, and the F1–latency Pareto front."""
    out = {"best_f1": max(rows, key=lambda r: r["f1"])["model"], "best_f1_per_ms": max(rows, key=lambda r: r["f1_per_ms"])["model"],
           "pareto_front": pareto_front(rows)}
    if all("gain_per_ms" in r for r in rows):
        out["best_gain_per_ms"] = max(rows, key=lambda r: r["gain_per_ms"])["model"]
    return out


def display_rows(rows: list[dict], columns: list[str]) -> list[dict]:
    """Rows for the Markdown/terminal table: ``mean ± std`` where there are repeats."""
    shown = []
    for r in rows:
        d = {}
        for c in columns:
            v = r.get(c, "")
            if f"{c}_std" in r:
                digits = 0 if c.endswith("params") else 1 if c.endswith("seconds") else 3
                d[c] = f"{v:.{digits}f} ± {r[f'{c}_std']:.{digits}f}"
            elif c in ("latency_ms_per_100", "served_ms_per_100", "train_seconds") and isinstance(v, float):
                d[c] = f"{v:.1f}"
            elif c in ("f1_per_ms", "gain_per_ms") and isinstance(v, float):
                d[c] = f"{v:.3g}"  # significant digits: a cross-encoder's −0.00001 F1/ms printed as "-0.0000" at 4 decimals
            else:
                d[c] = v
        shown.append(d)
    return shown


def _idle_threads_and_quiet_transformers(run: Callable) -> Callable:
    """Around a runner: OpenMP threads that sleep while they wait (set before torch and LightGBM
    load, so this module imports neither), and transformers quiet for the run only — the
    cross-encoder's load report lists its new head's weights as MISSING."""
    @functools.wraps(run)
    def wrapped(*args, **kwargs):
        yield_idle_cpu_threads()
        from .baselines.bert import quiet_transformers

        with quiet_transformers():
            return run(*args, **kwargs)
    return wrapped


@_idle_threads_and_quiet_transformers
def run_compare(data, out: str | Path, models: str | list[str] | None = None, *, fast: bool = False, repeats: int = 1, seed: int = 0,
                options: dict[str, Any] | None = None, load_kwargs: dict | None = None, threads: int = 2, save_models: bool = False,
                budget: Budget | None = None, quiet: bool = False, echo: Callable[[str], None] = print) -> list[dict]:
    """Train and score ``models`` on one split; write the table, plots and predictions; return the rows."""
    from .reporting import markdown_table, plot_pr_curves, plot_reliability_models, text_table, write_results
    from .storage import atomic_write_json, atomic_write_text

    if repeats < 1 or threads < 1:
        raise ConfigError("--repeats and --threads must be at least 1")
    names = parse_models(models if isinstance(models, str) or models is None else ",".join(models), echo)
    budget = budget or (FAST if fast else FULL)
    ran = budget_that_ran(budget, options or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = prepare_split(data, seed, budget, load_kwargs)
    test = parts["test"]
    echo(f"split by query (seed {seed}): train {len(parts['train'])}, valid {len(parts['valid'])}, test {len(test)} pairs; "
         f"{'fast' if fast else 'full'} budget; models: {', '.join(names)}")
    runs, first_probs, first_models = [], None, None
    for r in range(repeats):
        ctx = Context(budget, dict(options or {}), seed + r, threads, quiet, out, echo)
        rows, probs, fitted = run_once(names, parts, ctx)
        runs.append(rows)
        if r == 0:
            first_probs, first_models = probs, fitted
    rows = aggregate(runs)
    columns = [c for c in COLUMNS if c in rows[0]] + (["repeats"] if repeats > 1 else [])
    write_results(out, rows, [c for c in [*columns, "n_test"] if c in rows[0]] + [c for c in rows[0] if c.endswith("_std")])
    atomic_write_text(out / "results.md", markdown_table(display_rows(rows, columns), columns) + "\n")
    if repeats > 1:  # the mean hides which seed was lucky; keep every run's own row
        by_seed = pd.DataFrame([{"seed": seed + r, **row} for r, run in enumerate(runs) for row in run])
        atomic_write_text(out / "results_by_seed.csv", by_seed.to_csv(index=False))

    labels = test["label"].to_numpy()
    preds = test[["query", "title", "label"]].copy()
    for name, p in first_probs.items():
        preds[f"p_{name}"] = p
    preds.to_parquet(out / ".predictions.parquet.tmp", index=False)
    (out / ".predictions.parquet.tmp").replace(out / "predictions.parquet")
    plot_pr_curves({n: (labels, p) for n, p in first_probs.items()}, out / "pr_curves.png",
                   title=f"Defect precision–recall, {len(test)} held-out pairs")
    plot_f1_latency(rows, out / "f1_latency.png")
    plot_reliability_models(labels, first_probs, out / "reliability.png",
                            title=f"Reliability (calibrated probabilities), {len(test)} held-out pairs")
    if "gbdt" in first_models:
        first_models["gbdt"].plot_importance(out / "gbdt_importance.png")
    if save_models:  # every kind saves without pickle; the first repeat's (seed --seed) models
        for name, model in first_models.items():
            model.save(out / "models" / name)
        echo(f"models of seed {seed} saved under {out / 'models'}: {', '.join(first_models)} (evaluate, predict and select read "
             f"each; in Python defectnas.baselines.load_model)")
    load = load_averages()
    if load and load[0] > (os.cpu_count() or 1):
        echo(f"note: load average {load[0]:.1f} on {os.cpu_count()} CPUs: other work shared the cores, so train_seconds and the "
             f"latencies are inflated (run.json records the load)")
    options_run = {k: v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else str(v) for k, v in (options or {}).items()}
    atomic_write_json(out / "run.json", {**run_info(data, parts, names, ran, fast, seed, repeats, threads), "options": options_run,
                                         "load_average": load, "summary": summary(rows)})

    print("\n" + text_table(display_rows(rows, columns), columns))
    best = summary(rows)
    by_name = {r["model"]: r for r in rows}
    best_f1, best_eff = by_name[best["best_f1"]], by_name[best["best_f1_per_ms"]]
    print(f"\nbest F1: {best_f1['model']} ({best_f1['f1']:.3f}); best F1 per ms: {best_eff['model']} "
          f"({best_eff['f1_per_ms']:.4f} F1/ms at {best_eff['served_ms_per_100']:.1f} ms per 100 pairs served)")
    if "best_gain_per_ms" in best:
        gain = by_name[best["best_gain_per_ms"]]
        print(f"best F1 gained over the {FLOOR} floor per ms: {gain['model']} ({gain['gain_per_ms']:+.3g} F1/ms)")
    print(f"F1–latency Pareto front (fastest first): {', '.join(best['pareto_front'])}; table: {out / 'results.md'}")
    return rows


def run_sweep(data, out: str | Path, param: str, values: list[float] | None = None, *, fast: bool = False, repeats: int = 1,
              seed: int = 0, options: dict[str, Any] | None = None, load_kwargs: dict | None = None, threads: int = 2,
              budget: Budget | None = None, quiet: bool = False, echo: Callable[[str], None] = print) -> list[dict]:
    """Loss calibration: test F1 of ``dl-jl`` for each value of ``alpha`` or ``beta`` (the seed's Tables 1 and 2).

    Every fit reads the same texts through the same frozen pre-trained layers, so they share one
    memo of those states (as the grid search does): the first fit pays the pass, the rest skip it.
    """
    yield_idle_cpu_threads()  # before torch loads (see run_compare)
    import torch

    from .config import TrainConfig
    from .estimator import DefectClassifier
    from .model.bert import shared_memos
    from .reporting import markdown_table, text_table, write_results
    from .storage import atomic_write_text
    from .training import defect_metrics

    if param not in SWEEPS:
        raise ConfigError(f"--sweep must be one of {', '.join(SWEEPS)}, got {param!r}")
    values = list(values or SWEEPS[param])
    if any(v < 0 for v in values) or repeats < 1:
        raise ConfigError("sweep values must be at least 0 and --repeats at least 1")
    other = "beta" if param == "alpha" else "alpha"  # held at its option value (TrainConfig's default unless set)
    budget = budget or (FAST if fast else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = prepare_split(data, seed, budget, load_kwargs)
    labels = parts["test"]["label"].to_numpy()
    echo(f"sweep of {param} over {values} for dl-jl: train {len(parts['train'])}, valid {len(parts['valid'])}, test {len(parts['test'])} pairs")
    rows = []
    with shared_memos():
        for v in values:
            scores = []
            for r in range(repeats):
                ctx = Context(budget, dict(options or {}), seed + r, threads, quiet, out, echo)
                torch.set_num_threads(threads)
                started = time.perf_counter()
                clf = DefectClassifier(**ctx.neural(variant="dl-jl", **{param: float(v)})).fit(parts["train"], parts["valid"], quiet=quiet)
                m = defect_metrics(labels, clf.predict_proba(parts["test"]), clf.threshold_)
                scores.append({"precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "valid_f1": float(clf.valid_f1_),
                               "train_seconds": time.perf_counter() - started})
                echo(f"{param}={v} seed {seed + r}: test F1 {m['f1']:.3f}")
            row = {param: float(v), other: float(ctx.neural().get(other, getattr(TrainConfig(), other)))}
            for key in scores[0]:
                row[key] = float(np.mean([s[key] for s in scores]))
                if repeats > 1:
                    row[f"{key}_std"] = float(np.std([s[key] for s in scores], ddof=1))
            rows.append(row)
    columns = [param, other, "precision", "recall", "f1", "valid_f1", "train_seconds"]
    write_results(out, rows, columns + [c for c in rows[0] if c.endswith("_std")], stem=f"sweep_{param}")
    atomic_write_text(out / f"sweep_{param}.md", markdown_table(display_rows(rows, columns), columns) + "\n")
    plot_sweep(rows, param, out / f"sweep_{param}.png")
    print("\n" + text_table(display_rows(rows, columns), columns))
    return rows


def run_info(data, parts, names, budget: Budget, fast: bool, seed: int, repeats: int, threads: int) -> dict[str, Any]:
    """What ran: data, models, seeds, the budget as the models got it (:func:`budget_that_ran`), threads, split, versions."""
    import torch

    from . import __version__

    return {"data": str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>", "models": names, "seed": seed, "repeats": repeats,
            "fast": fast, "budget": asdict(budget), "threads": threads, "served_threads": SERVED_THREADS, "cpu_count": os.cpu_count(),
            "split": {k: {"rows": len(v), "queries": int(v["query"].nunique()), "defect_rate": float(v["label"].mean())} for k, v in parts.items()},
            "test_fingerprint": fingerprint(parts["test"]), "defectnas": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


# ------------------------------------------------------------------ the plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_f1_latency(rows: list[dict], path: str | Path) -> None:
    """Test F1 against served CPU latency per 100 pairs (log scale), one labelled point per model, the Pareto front dashed."""
    from .reporting import _save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        ax.errorbar(r["served_ms_per_100"], r["f1"], xerr=r.get("served_ms_per_100_std"), yerr=r.get("f1_std"), fmt="o", capsize=3)
        ax.annotate(r["model"], (r["served_ms_per_100"], r["f1"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = {r["model"]: r for r in rows}
    front = [front[m] for m in pareto_front(rows)]
    ax.plot([r["served_ms_per_100"] for r in front], [r["f1"] for r in front], "--", color="grey", alpha=0.6, zorder=0,
            label="Pareto front (nothing both faster and better)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("CPU latency as served (products cached where possible), ms per 100 pairs (log)")
    ax.set_ylabel("test F1 (defect class)")
    ax.set_title("F1 against latency")
    ax.grid(alpha=0.3, which="both")
    _save_figure(fig, path)
    plt.close(fig)


def plot_sweep(rows: list[dict], param: str, path: str | Path) -> None:
    """Test and validation F1 of dl-jl against the swept loss weight."""
    from .reporting import _save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = [r[param] for r in rows]
    ax.errorbar(x, [r["f1"] for r in rows], yerr=[r.get("f1_std", 0.0) for r in rows], marker="o", capsize=3, label="test F1")
    ax.plot(x, [r["valid_f1"] for r in rows], marker="s", linestyle="--", label="validation F1")
    ax.set_xlabel(param)
    ax.set_ylabel("F1 (defect class)")
    ax.set_title(f"dl-jl: F1 against {param}")
    ax.legend()
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)
