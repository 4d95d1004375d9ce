"""Evaluate one architecture: train it under K seeds, score it on validation, time it as served.

Why a module of its own: this is the unit of work that runs in a worker process or a Ray task,
so it takes and returns plain JSON-ready data (plus the data tables) and touches nothing else.
Children, top-k retrains, Pareto-front models and the noise floor's reference are all built
from the same ``DefectClassifier(**options)``; only the budget (epochs, rows) and seeds differ.

Low noise by construction:

- **Common random numbers.** Every child of a search trains under the same K seeds
  (``--child-seeds K``), so two children differ by their architecture, not by one drawing a
  luckier initialisation or batch order; the reward is the mean over the K runs and the spread
  is logged with it.
- **A threshold-free metric.** Average precision of the defect class on the whole validation
  split (``--reward-metric ap``, the default) does not inherit the noise of a threshold picked
  on a few validation queries; F1 at the tuned threshold is logged beside it.

Latency is measured, not predicted, on the serving path: what ``serve`` spends on one request
of 1 query × 100 cached products — the query tower on the (unpadded) query plus the score head
over 100 pre-encoded titles — in this process, at ``serve``'s thread count (1), as the median of
≥ 30 timed calls after warm-up, cycling through real validation queries. The title tower is not
part of it: its output is cached.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import DataWarning
from ..storage import atomic_write_json

LATENCY_PRODUCTS = 100  # products scored per timed request
LATENCY_QUERIES = 10  # distinct real queries the timed requests cycle through

_TABLES: dict[str, pd.DataFrame] = {}  # a worker process's data, loaded once by init_worker


def reward(value: float, latency_ms: float, target_ms: float = 0.0, weight: float = 0.0, budget_ms: float = 0.0) -> float:
    """The search's reward for a child whose metric (AP or F1) is ``value``.

    - ``budget_ms`` > 0: a hard latency budget — a child over it gets no credit (0), as in TuNAS
      (Bender et al. 2020).
    - ``weight`` > 0: MnasNet's soft trade-off (Tan et al. 2019), ``value · (latency / target)^(−weight)``.
    - otherwise the metric itself.
    """
    if budget_ms > 0 and latency_ms > budget_ms:
        return 0.0
    if weight <= 0 or target_ms <= 0:
        return float(value)
    return float(value) * (max(latency_ms, 1e-6) / target_ms) ** (-weight)


def served_latency_ms(clf, queries: list[str], titles: list[str], repeats: int = 30, threads: int = 1) -> float:
    """Median ms of one ``serve`` request (the search's policy: at least 30 timed requests after 3
    warm-up ones, cycling through up to 10 queries, against 100 cached products)."""
    from ..serving.encoding import request_latency_ms

    return request_latency_ms(clf, queries[:LATENCY_QUERIES], titles[:LATENCY_PRODUCTS], max(30, repeats), threads, warmup=3)


def latency_inputs(valid: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The real queries and titles every child of a search is timed on (fixed by the split)."""
    titles = valid["title"].head(LATENCY_PRODUCTS).tolist()
    titles = (titles * (-(-LATENCY_PRODUCTS // max(1, len(titles)))))[:LATENCY_PRODUCTS]
    return list(dict.fromkeys(valid["query"].tolist()))[:LATENCY_QUERIES], titles


def evaluate_child(job: dict[str, Any], train: pd.DataFrame | None = None, valid: pd.DataFrame | None = None,
                   test: pd.DataFrame | None = None) -> dict[str, Any]:
    """:func:`train_child`, with the data warnings it raised returned in ``result["warnings"]``
    (their distinct texts) instead of shown: a worker process or Ray task has no ``warning: ...``
    formatting and no memory of what was already said, so a child's warning came out as a raw
    Python warning, once per seed and child (18 copies in a 7-child search). The executors raise
    them again in the search's own process (:func:`defectnas.search.executors.rewarned`), where
    the command line shows each once."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        result = train_child(job, train, valid, test)
    said = []
    for w in caught:
        if issubclass(w.category, DataWarning):
            said.append(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    result["warnings"] = list(dict.fromkeys(said))
    return result


def train_child(job: dict[str, Any], train: pd.DataFrame | None = None, valid: pd.DataFrame | None = None,
                test: pd.DataFrame | None = None) -> dict[str, Any]:
    """Train ``job["options"]`` under each of ``job["seeds"]``; return validation AP/F1 (mean and per
    seed), served latency, trainable parameters and seconds.

    ``job``: ``options`` (flat DefectClassifier options: the architecture's, the budget, the base
    model), ``seeds`` (training seeds: common random numbers), ``tables`` (names of the
    train/valid[/test] tables in a worker set up by :func:`init_worker`; ignored when the tables
    are passed in), ``latency_repeats``, ``time_latency`` (default true; false: ``latency_ms`` is
    None, as for a retrain's later seeds), ``threads`` (torch threads while training), and
    optionally ``save_dir`` (write the first seed's fitted model there) and ``probs_path`` (save
    the test probabilities, seeds × rows, as ``.npy``, for the paired test).
    """
    from ..estimator import DefectClassifier  # torch-heavy: imported in the worker, on first use
    from ..model.bert import frozen_fill, share_memos_between_models
    from ..training.metrics import average_precision, defect_metrics

    share_memos_between_models()  # children share the frozen pre-trained layers' outputs per text (a worker's
    # process lives for the search; in the caller's process SerialExecutor scopes it to the search)

    started, (frozen_s, frozen_texts) = time.perf_counter(), frozen_fill()
    names = job.get("tables", {})
    train = train if train is not None else _TABLES[names["train"]]
    valid = valid if valid is not None else _TABLES[names["valid"]]
    if test is None and names.get("test"):
        test = _TABLES[names["test"]]
    seeds = [int(s) for s in job.get("seeds", [job["options"].get("seed", 0)])]
    previous_threads = torch.get_num_threads()
    if int(job.get("threads", 0)) > 0:
        torch.set_num_threads(int(job["threads"]))
    aps, f1s, tests, test_probs, first = [], [], [], [], None
    try:
        for seed in seeds:
            clf = DefectClassifier(**{**job["options"], "seed": seed})
            clf.fit(train, valid, quiet=True)
            aps.append(float(clf.valid_ap_))
            f1s.append(max(0.0, float(clf.valid_f1_)))
            if test is not None:
                probs = _predict_memoised(clf, test)
                metrics = defect_metrics(test["label"].to_numpy(), probs, clf.threshold_)
                tests.append({**metrics, "average_precision": average_precision(test["label"].to_numpy(), probs)})
                test_probs.append(np.asarray(probs, dtype=np.float64))  # float32 would merge close probabilities into ties and move AP
            first = first or clf
        latency = None  # a retrain's later seeds are not timed: its model in the folder is the first seed's
        if job.get("time_latency", True):
            if first.train_config_.device != "cpu":  # trained on an accelerator: served latency is still timed on the CPU
                first.model_.to("cpu")
                first.train_config_.device = "cpu"
            queries, titles = latency_inputs(valid)
            latency = served_latency_ms(first, queries, titles, int(job.get("latency_repeats", 30)), threads=1)
    finally:
        torch.set_num_threads(previous_threads)  # a serial search runs children in the caller's process
    result: dict[str, Any] = {
        "ap": float(np.mean(aps)), "ap_seeds": aps, "f1": float(np.mean(f1s)), "f1_seeds": f1s,
        "latency_ms": latency, "params": int(first.model_.num_parameters(trainable_only=True)),
    }
    if tests:
        result["test"] = tests
    if job.get("probs_path") and test_probs:
        path = Path(job["probs_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part.npy")
        np.save(tmp, np.stack(test_probs))
        tmp.replace(path)
    if job.get("save_dir"):
        out = Path(job["save_dir"])
        shutil.rmtree(out, ignore_errors=True)  # a leftover of a killed run
        first.save(out)
        if tests:
            atomic_write_json(out / "metrics.json", tests[0])
    result["seconds"] = time.perf_counter() - started
    seconds, texts = frozen_fill()  # of those, the one-off pass over texts no child of this process had seen
    result["frozen_s"], result["frozen_texts"] = seconds - frozen_s, texts - frozen_texts
    result["pid"] = os.getpid()  # whose memo now holds these tables' frozen states (executors.FrozenLedger)
    return result


def _predict_memoised(clf, table: pd.DataFrame) -> np.ndarray:
    """Test probabilities with the frozen pre-trained layers memoised (exact: they are a pure function
    of the ids), so the top-k retrains and the default's seeds pass the test texts through them once."""
    from ..model.bert import frozen_states_memoised

    with frozen_states_memoised(clf.model_):
        return clf.predict_proba(table)


def init_worker(paths: dict[str, str], threads: int = 1) -> None:
    """Process-pool initializer: load the data tables once per worker, pin torch threads."""
    torch.set_num_threads(max(1, threads))
    for name, path in paths.items():
        _TABLES[name] = pd.read_parquet(path)
