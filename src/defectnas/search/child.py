"""Evaluate one architecture: train it, score it on validation, time it on this CPU.

Why a module of its own: this is the unit of work that runs in a worker process or a Ray task,
so it takes and returns plain JSON-ready data (plus the data tables) and touches nothing else.
Children and final models are built by the same ``DefectClassifier(title_layers=...)``; only
the budget (epochs, rows) differs.

Latency is measured, not predicted: the product-side work a request costs once the query is
encoded — title encoding plus scoring — for a batch of 100 real validation pairs, on one
thread, median of repeats after a warm-up. (The query encoder is fixed and runs once per request,
so it adds the same time to every architecture and is left out.) ``latency_ms`` is therefore
milliseconds per 100 pairs, the unit of ``compare``'s ``latency_ms_per_100``. When the title
tower starts from frozen pre-trained layers, their pass is the same computation for every child
(same layers, same 100 titles), so it is timed once per process and added to each child's timed
remainder (searched cells, pooling, scoring) — otherwise it would cost most of a child's time.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..storage import atomic_write_json
from ..timing import median_ms

LATENCY_PAIRS = 100  # pairs per timed batch

_TABLES: dict[str, pd.DataFrame] = {}  # a worker process's data, loaded once by init_worker


def reward(f1: float, latency_ms: float, target_ms: float, weight: float) -> float:
    """Validation F1, or MnasNet's ``F1 · (latency / target)^(−weight)`` when ``weight`` > 0."""
    if weight <= 0:
        return float(f1)
    return float(f1) * (max(latency_ms, 1e-6) / target_ms) ** (-weight)


_FROZEN_MS: dict[tuple, float] = {}  # per process: (backbone, depth, titles) → median ms of the frozen pass
_LATENCY_MEMOS: dict[str, Any] = {}  # per process and backbone: frozen states of the timed texts (queries and titles)


@torch.no_grad()
def measure_latency(clf, pairs: pd.DataFrame, repeats: int = 7) -> float:
    """Median milliseconds of title encoding + scoring for ``LATENCY_PAIRS`` pairs, on one thread."""
    from ..model.bert import FrozenStatesMemo

    model, cfg, tok = clf.model_, clf.model_config_, clf.tokenizer_
    pairs = pairs.head(LATENCY_PAIRS)
    pairs = pd.concat([pairs] * (-(-LATENCY_PAIRS // len(pairs))), ignore_index=True).head(LATENCY_PAIRS)
    device = next(model.parameters()).device
    qids = torch.from_numpy(tok.encode(pairs["query"].tolist(), cfg.query_max_len)).to(device)
    tids = torch.from_numpy(tok.encode(pairs["title"].tolist(), cfg.title_max_len)).to(device)
    embed = model.title_encoder.embed
    backbone = getattr(embed, "backbone", None)
    frozen = min(embed.depth, backbone.frozen_layers) if backbone is not None else 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    saved_memo = backbone.memo if backbone is not None else None
    try:
        model.eval()
        frozen_ms = 0.0
        if frozen:
            key = (backbone.key, frozen, tids.cpu().numpy().tobytes())
            if key not in _FROZEN_MS:
                lengths = (tids != 0).sum(1)
                _FROZEN_MS[key] = median_ms(lambda: backbone._run_frozen(tids, lengths, frozen), repeats)
            frozen_ms = _FROZEN_MS[key]
            # a memo of its own (not the training memo, which may be full): the frozen pass of these
            # queries and titles runs once per process, and the timed runs below skip it
            backbone.memo = _LATENCY_MEMOS.setdefault(backbone.key, FrozenStatesMemo())
            backbone.memo.enabled = True
        q = model.encode_query(qids)  # once: the query side is not what the search varies
        rest_ms = median_ms(lambda: model.score(q, model.encode_title(tids)), repeats)
    finally:
        torch.set_num_threads(threads)
        if backbone is not None:
            backbone.memo = saved_memo
    return frozen_ms + rest_ms


def evaluate_child(job: dict[str, Any], train: pd.DataFrame | None = None, valid: pd.DataFrame | None = None,
                   test: pd.DataFrame | None = None) -> dict[str, Any]:
    """Train ``job["architecture"]`` with ``job["options"]``; return F1, latency, params, seconds.

    ``job``: ``architecture`` (title layers), ``options`` (flat DefectClassifier options: the
    budget, seed, base model), ``tables`` (names of the train/valid[/test] tables in a worker
    that was set up by :func:`init_worker`; ignored when the tables are passed in),
    ``latency_repeats``, and optionally ``save_dir`` (write the fitted model there; final models).
    """
    from ..estimator import DefectClassifier  # torch-heavy: imported in the worker, on first use
    from ..model.bert import share_memos_between_models

    share_memos_between_models()  # children share the frozen pre-trained layers' outputs per text (a worker's
    # process lives for the search; in the caller's process SerialExecutor scopes it to the search)

    started = time.perf_counter()
    names = job.get("tables", {})
    train = train if train is not None else _TABLES[names["train"]]
    valid = valid if valid is not None else _TABLES[names["valid"]]
    if test is None and names.get("test"):
        test = _TABLES[names["test"]]
    previous_threads = torch.get_num_threads()
    if int(job.get("threads", 0)) > 0:
        torch.set_num_threads(int(job["threads"]))
    try:
        clf = DefectClassifier(**{**job["options"], "title_layers": job["architecture"]})
        clf.fit(train, valid, quiet=True)
        f1 = float(clf.valid_f1_)
        result: dict[str, Any] = {
            "f1": f1 if f1 >= 0 else 0.0,
            "latency_ms": measure_latency(clf, valid, int(job.get("latency_repeats", 7))),
            "params": int(clf.model_.num_parameters(trainable_only=True)),
        }
        if test is not None:
            result["test"] = clf.evaluate(test)
    finally:
        torch.set_num_threads(previous_threads)  # a serial search runs children in the caller's process
    if job.get("save_dir"):
        out = Path(job["save_dir"])
        shutil.rmtree(out, ignore_errors=True)  # a leftover of a killed run
        clf.save(out)
        if "test" in result:
            atomic_write_json(out / "metrics.json", result["test"])
    result["seconds"] = time.perf_counter() - started
    return result


def init_worker(paths: dict[str, str], threads: int = 1) -> None:
    """Process-pool initializer: load the data tables once per worker, pin torch threads."""
    torch.set_num_threads(max(1, threads))
    for name, path in paths.items():
        _TABLES[name] = pd.read_parquet(path)
