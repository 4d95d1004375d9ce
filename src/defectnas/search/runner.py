"""The search loop: measure the noise floor, then sample a batch, evaluate, log, learn, checkpoint; repeat.

Why written this way: a search runs for tens of minutes on a CPU and must survive being killed
at any moment (SIGKILL included). The order of writes is what makes that safe:

0. before any sampling, the default architecture is trained under ``noise_repeats`` sets of K
   seeds (the first set is the search's own child seeds); each finished repeat is appended to
   ``noise.jsonl``, and their spread — the *noise floor* — goes into ``search.json``;
1. the strategy proposes a batch of architectures (trial numbers are consecutive);
2. each child, when it finishes, is appended to ``trials.jsonl`` (fsynced) — a repeat of an
   architecture already trained is logged at once, marked ``cached``, without training;
3. when the whole batch is logged, the strategy learns from it and the agent state (controller
   weights, Adam moments, sampling generator, baseline, next trial, elapsed time) is written
   atomically to ``controller.safetensors``.

``--resume`` loads the checkpoint (the state *before* the unfinished batch) and proposes that
batch again: generator, weights and (for evolution) the population read off the log are those
of the first run, so the architectures are the same; trials that already have a line are taken
from it, not rerun; the others are run; then the update happens exactly as it would have. So no
finished trial is lost, none is run twice, and the sequence equals an uninterrupted run with the
same seed, under every strategy. After the last trial (or ``--budget-minutes``) the top-k and
the Pareto front are retrained with fresh seeds (:mod:`defectnas.search.final`), and the best's
query tower is distilled into fewer layers (:mod:`defectnas.search.distill`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..storage import append_line, atomic_write_json
from ..training.significance import FEW_QUERIES
from .child import reward
from .config import SEARCH_FILE, SearchConfig, load_saved, merge_for_resume
from .distill import check_layers
from .executors import make_executor
from .final import (CHILD_TABLES, FINAL_FILE, budget_postfix, finalize, frozen_pass_estimate_s, memoised_tables,
                    retrain_estimate_s, steady_seconds)
from .plots import plot_noise, plot_pareto, plot_rewards
from .report import write_search_report
from .space import Architecture, Space, arch_key, make_space
from .strategies import make_agent, make_strategy
from .trials import TrialLog, read_jsonl

CHECKPOINT = "controller.safetensors"
TRIALS = "trials.jsonl"
NOISE = "noise.jsonl"
# under --budget-minutes the sampling bar counts to the trial cap, which the budget usually stops short of: no ETA to it
# (tqdm's default format less "<{remaining}"); its postfix says how much of the budget is left instead
NO_ETA_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
PLOT_EVERY_S = 120.0  # while sampling, the plots are redrawn after a batch once this many seconds passed since the last
# drawing (~1 s of matplotlib each time), so a watcher sees them move without a fast search paying for it; always at the end


def read_final(out: Path) -> dict[str, Any]:
    """What ``out/final.json`` holds ({} when the search retrained nothing)."""
    try:
        return json.loads((out / FINAL_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


@dataclass
class SearchResult:
    out: Path
    trials: list[dict[str, Any]] = field(default_factory=list)  # trials.jsonl, in trial order
    top_k: list[dict[str, Any]] = field(default_factory=list)  # top_k.json
    best_dir: Path | None = None  # the best retrained model directory
    seconds: float = 0.0  # wall time of the whole search: earlier runs of a resumed one up to their last checkpoint, plus this run
    noise_floor: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)  # final.json's dict exactly (read back): retrains, Pareto front, paired test
    run_seconds: float = 0.0  # wall time of this run alone


CPU_SERVING_DEFAULTS = {"title_trainable": [0]}  # on a CPU a fine-tuned title child costs ~15× a frozen one (README)


def build_space(cfg: SearchConfig) -> Space:
    """The search space ``cfg.space`` names, with ``space_options`` applied.

    On a CPU (the children's ``device``), the serving space leaves title fine-tuning out unless
    ``space_options`` asks for it: a child that fine-tunes title layers costs about fifteen frozen
    ones there, and would eat a default search's budget. The space used is saved in search.json.
    """
    if cfg.space == "seed":
        return make_space("seed", **{"num_layers": cfg.num_layers, **cfg.space_options})
    settings = {"max_cells": cfg.num_layers, **cfg.space_options}
    if str(cfg.options.get("device", "cpu")).startswith("cpu"):
        settings = {**CPU_SERVING_DEFAULTS, **settings}
    return make_space(cfg.space, **settings)




def run_search(cfg: SearchConfig, out: str | Path, *, resume: bool = False, quiet: bool = True,
               log: Callable[[str], None] | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) the search described by ``cfg`` in folder ``out``."""
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():  # refused before the data is read (it failed at the first write, with a traceback)
        raise ConfigError(f"--out {out} is a file; give a folder (a new one, or a search's to --resume it)")
    say = log or (lambda message: None)
    saved = load_saved(out)
    if saved is not None and not resume:
        raise ConfigError(f"{out} already holds a search; pass --resume to continue it, or choose a new --out")
    if saved is None and (out / TRIALS).exists():
        raise ConfigError(f"{out} has {TRIALS} but no {SEARCH_FILE}; choose a new --out")
    if saved is not None:
        cfg = merge_for_resume(saved, cfg.to_dict())
    elif resume:
        say(no_search_to_resume(out))

    space = build_space(cfg)
    check_layers(cfg, space)  # --distill-query K: refused now if no model of the space can be distilled to K
    d_model = int(cfg.options.get("d_model", 64))
    if cfg.space == "seed" and d_model % space.min_d_model_multiple():
        raise ConfigError(f"d_model={d_model} must be a multiple of {space.min_d_model_multiple()} (attention heads {space.heads})")
    if not cfg.threads:
        cfg.threads = 1 if cfg.ray_address else max(1, (os.cpu_count() or 1) // max(cfg.workers, 1))  # a Ray task holds 1 CPU
    tables = prepare_tables(cfg)
    say(f"search data: {len(tables['child_train'])} training pairs per child, {len(tables['child_valid'])} validation pairs; "
        f"final models: {len(tables['train'])} train, {len(tables['valid'])} valid, {len(tables.get('test', []))} test")
    few = {name: tables[name]["query"].nunique() for name in ("valid", "test") if name in tables}
    few = {name: n for name, n in few.items() if n < FEW_QUERIES}
    if few:  # (the ESCI sample: 10 validation and 20 test queries, where no two models could be told apart)
        say("note: " + " and ".join(f"the {'validation' if name == 'valid' else name} split has {n} queries" for name, n in few.items())
            + ": rewards, the noise floor and the paired test on so few queries are mostly noise")
    executor = make_executor({k: v for k, v in tables.items() if k != "distill"}, cfg.workers, cfg.ray_address, cfg.threads)
    try:
        out.mkdir(parents=True, exist_ok=True)  # only now: a start refused above (settings, data, Ray) leaves no empty --out
        if not cfg.batch_size:
            cfg.batch_size = max(4 if cfg.strategy == "rl" else 1, cfg.workers, executor.parallelism)
        meta = {**cfg.to_dict(), "space_settings": space.to_dict()}
        atomic_write_json(out / SEARCH_FILE, {**meta, "noise_floor": _read_floor(out)})
        elapsed_before = _elapsed_before(out)  # read before the floor logs this run's repeats
        elapsed = lambda: elapsed_before + time.perf_counter() - started  # noqa: E731  (seconds of this search, earlier runs of it included)
        left_s = (lambda: 60 * cfg.budget_minutes - elapsed()) if cfg.budget_minutes else None  # noqa: E731  (of --budget-minutes)
        floor = noise_floor(cfg, space, executor, out, say, quiet=quiet, left_s=left_s)
        if cfg.latency_budget_ms and (floor.get("latency_ms") or 0.0) > cfg.latency_budget_ms:
            say(f"note: {space.reference} serves in {floor['latency_ms']:.2f} ms a request here, over --latency-budget-ms "
                f"{cfg.latency_budget_ms:g}: it gets no credit as a child and cannot be best/, which will be the most accurate model "
                "within the budget and may score below the default (the paired test at the end says by how much)")
        if cfg.latency_weight > 0 and not cfg.latency_target_ms:
            cfg.latency_target_ms = float(floor.get("latency_ms") or 0.0)
            say(f"latency target: {cfg.latency_target_ms:.2f} ms per request (the default architecture, measured)")
        atomic_write_json(out / SEARCH_FILE, {**cfg.to_dict(), "space_settings": space.to_dict(), "noise_floor": floor})
        trials = _run_trials(cfg, space, executor, out, quiet, say, elapsed, left_s, floor, tables)
        final = finalize(cfg, space, out, trials, executor, floor, tables, quiet, say, left_s=left_s)
        seconds = elapsed()
        _say_budget_overrun(cfg, seconds, final.get("report") or {}, say)
        if trials.records():
            page = write_search_report(out, {**cfg.to_dict(), "noise_floor": floor}, trials.records(), final.get("report"), space, seconds)
            say(f"report: {page} (what the search found, how much of it is noise, and the evidence)")
    finally:
        executor.shutdown()
    run_seconds = time.perf_counter() - started
    return SearchResult(out, trials.records(), final.get("top_k", []), final.get("best_dir"), elapsed_before + run_seconds,
                        floor, read_final(out), run_seconds)


def no_search_to_resume(out: str | Path) -> str:
    """What ``--resume`` of a folder without a search says (the CLI prints it even with --quiet)."""
    return f"--resume: {out} holds no search yet ({SEARCH_FILE} missing): starting a new one"


def _elapsed_before(out: Path) -> float:
    """Wall seconds earlier runs of this search spent, as its controller checkpoint last recorded
    them; before any checkpoint (a run killed or refused after its noise floor), the seconds of the
    floor's repeats logged in ``noise.jsonl``, which a resumed run keeps; 0 for a new search. What a
    killed run did after its last checkpoint or logged repeat is redone, not counted."""
    from ..storage import load_metadata

    if not (out / CHECKPOINT).exists():
        return float(sum(r.get("seconds", 0.0) for r in read_jsonl(out / NOISE, require="repeat")))
    return float(load_metadata(out / CHECKPOINT).get("extra", {}).get("elapsed_s", 0.0))


def _say_budget_overrun(cfg: SearchConfig, seconds: float, report: dict[str, Any], say) -> None:
    """A closing note when this run passed --budget-minutes by more than 10%, saying where the
    estimate went wrong: sampling stops on an estimate of the retrains (and distillation) made
    from the children's own seconds, so a machine that slows down later overruns it."""
    budget = 60 * cfg.budget_minutes
    if not budget or seconds <= 1.1 * budget:
        return
    retrain = report.get("retrain") or {}
    distilled = report.get("distilled") if isinstance(report.get("distilled"), dict) else {}
    spent = (retrain.get("seconds") or 0.0) + (distilled.get("seconds") or 0.0)
    where = (f": retraining and distillation took {spent:.0f} s where {retrain['estimate_s']:.0f} s were reserved"
             if retrain.get("estimate_s") else "")
    say(f"note: this run took {seconds / 60:.1f} min against --budget-minutes {cfg.budget_minutes:g} ({seconds / budget - 1:+.0%})"
        + where + "; the budget stops sampling on estimates made from the children's own seconds, so other load on the "
        "machine, or a budget too small for the noise floor and one batch, overruns it")


# ------------------------------------------------------------------------ data
def prepare_tables(cfg: SearchConfig) -> dict[str, pd.DataFrame]:
    """Split by query once; children get fixed row subsets, final models the whole splits."""
    from ..data import load_pairs, split_by_query

    df = load_pairs(cfg.data, **cfg.load_kwargs)
    parts = split_by_query(df, valid_frac=cfg.valid_frac, test_frac=cfg.test_frac, seed=cfg.data_seed)
    cols = ["query", "title", "label"]

    def subset(part: pd.DataFrame, rows: int) -> pd.DataFrame:
        if rows and rows < len(part):
            part = part.sample(n=rows, random_state=cfg.seed)
        return part[cols].reset_index(drop=True)

    tables = {
        "child_train": subset(parts["train"], cfg.child_rows),
        "child_valid": subset(parts["valid"], cfg.child_valid_rows),
        "train": subset(parts["train"], cfg.final_rows),
        "valid": subset(parts["valid"], 0),
    }
    if len(parts["test"]):
        tables["test"] = subset(parts["test"], 0)
    if cfg.distill_query:  # the texts a distilled query tower learns from: every training pair's (labels unused)
        tables["distill"] = subset(parts["train"], 0)
    return tables


def child_seeds(cfg: SearchConfig, repeat: int = 0) -> list[int]:
    """The K training seeds of repeat ``repeat``; repeat 0 is what every child of the search uses."""
    return [cfg.seed * 1000 + repeat * cfg.child_seeds + j for j in range(cfg.child_seeds)]


def final_seeds(cfg: SearchConfig) -> list[int]:
    """Fresh seeds for retrains: none of them trained a child or the noise floor."""
    return [cfg.seed * 1000 + 500 + j for j in range(cfg.final_seeds)]


def child_options(cfg: SearchConfig, space: Space, architecture: Architecture) -> dict[str, Any]:
    """DefectClassifier options of a search child: base options, the architecture's, the child budget.

    A child's probabilities are calibrated with the sigmoid map alone: its reward is AP of the raw
    scores (calibration-free) or F1 at the best threshold, which a strictly increasing map does
    not change, while ``"auto"`` cross-validates two maps (~0.6 s a seed, for nothing the search reads)."""
    return {**cfg.options, "variant": cfg.variant, **({"matching": cfg.matching} if cfg.space == "seed" else {}),
            **space.to_options(architecture), "epochs": cfg.child_epochs, "patience": max(2, cfg.child_epochs),
            "calibration": "sigmoid"}


def final_options(cfg: SearchConfig, space: Space, architecture: Architecture) -> dict[str, Any]:
    """DefectClassifier options of a retrain: base options, the architecture's, ``final_epochs`` (0: the options')."""
    opts = {**cfg.options, "variant": cfg.variant, **({"matching": cfg.matching} if cfg.space == "seed" else {}),
            **space.to_options(architecture)}
    if cfg.final_epochs:
        opts["epochs"] = cfg.final_epochs
    return opts


def child_job(cfg: SearchConfig, space: Space, architecture: Architecture, seeds: list[int]) -> dict[str, Any]:
    return {"architecture": architecture, "options": child_options(cfg, space, architecture), "seeds": seeds,
            "latency_repeats": cfg.latency_repeats, "tables": {"train": "child_train", "valid": "child_valid"}}


def seed_values(cfg: SearchConfig, res: dict[str, Any]) -> list[float]:
    """The reward metric per child seed of a child's result (or a logged record)."""
    return res["ap_seeds"] if cfg.reward_metric == "ap" else res["f1_seeds"]


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), rounded as the logs keep them."""
    return round(float(np.mean(values)), 6), round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 6)


def result_fields(cfg: SearchConfig, res: dict[str, Any]) -> dict[str, Any]:
    """What a trial line keeps of a child's result, with its reward."""
    metric, spread = mean_and_spread(seed_values(cfg, res))
    return {
        "reward": reward(metric, res["latency_ms"], cfg.latency_target_ms, cfg.latency_weight, cfg.latency_budget_ms),
        "metric": metric, "spread": spread,
        "ap": round(res["ap"], 6), "f1": round(res["f1"], 6),
        "ap_seeds": [round(v, 6) for v in res["ap_seeds"]], "f1_seeds": [round(v, 6) for v in res["f1_seeds"]],
        "latency_ms": round(res["latency_ms"], 4),
        "over_budget": bool(cfg.latency_budget_ms and res["latency_ms"] > cfg.latency_budget_ms),
        "params": res["params"],
    }


def load_average() -> float | None:
    """The 1-minute load average, where the OS gives one: beside each trial's latency, which a busy
    machine inflates."""
    from ..timing import load_averages

    loads = load_averages()
    return loads[0] if loads else None


def usable_cores() -> int:
    """CPUs this process may run on (the container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ------------------------------------------------------------------ noise floor
def _read_floor(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / SEARCH_FILE).read_text(encoding="utf-8")).get("noise_floor", {})
    except (OSError, ValueError):
        return {}


def floor_repeats(cfg: SearchConfig) -> int:
    """Repeats the noise floor runs: ``noise_repeats``, but at least one when the start needs the
    reference's measured latency — the latency target of ``--latency-weight`` (when not given), or
    the check that the reference meets ``--latency-budget-ms``, said before sampling rather than
    after the retrains (a new user's ``--noise-repeats 0`` search heard it only at the end, with an
    over-budget ``best/``). The one repeat also gives the budget its first child seconds and the
    machine's frozen-pass speed."""
    return max(cfg.noise_repeats, int(cfg.latency_weight > 0 and not cfg.latency_target_ms), int(cfg.latency_budget_ms > 0))


def noise_floor(cfg: SearchConfig, space: Space, executor, out: Path, say, quiet: bool = True,
                left_s: Callable[[], float] | None = None) -> dict[str, Any]:
    """The default architecture under ``noise_repeats`` sets of K seeds (:func:`floor_repeats`): how
    much a reward moves when nothing but the seeds changes. Repeats already in ``noise.jsonl`` are
    not rerun. A progress bar counts the repeats (``left_s``: the budget's seconds left, shown)."""
    from tqdm.auto import tqdm

    from ..progress import progress

    arch = space.default_architecture()
    done = {int(r["repeat"]): r for r in read_jsonl(out / NOISE, require="repeat")}
    repeats = floor_repeats(cfg)
    todo = [r for r in range(repeats) if r not in done]
    if done:  # a resumed search
        say(f"noise floor: {len(done)} of {repeats} repeats already in {NOISE}, not rerun")
    if todo and cfg.noise_repeats >= repeats:
        say(f"noise floor: the default architecture under {repeats} sets of {cfg.child_seeds} seeds")
    elif todo:
        why = " and ".join(reason for reason, applies in (
            ("to check it against --latency-budget-ms now", cfg.latency_budget_ms > 0),
            ("to measure --latency-weight's latency target", cfg.latency_weight > 0 and not cfg.latency_target_ms)) if applies)
        say(f"--noise-repeats {cfg.noise_repeats}: no noise floor, but {space.reference} is trained once under the "
            f"{cfg.child_seeds} child seed{'s' if cfg.child_seeds != 1 else ''} and timed as served, {why}")
    if not todo:
        return summarize_floor(cfg, arch, [done[r] for r in sorted(done)])
    jobs = [child_job(cfg, space, arch, child_seeds(cfg, r)) for r in todo]
    bar = progress(total=repeats, initial=repeats - len(todo), desc="noise floor", unit="repeat", quiet=quiet,
                   postfix=budget_postfix(left_s))
    try:
        for i, res in executor.map_unordered(jobs):
            record = {"repeat": todo[i], "seeds": jobs[i]["seeds"], **result_fields(cfg, res), **cost_fields(res)}
            append_line(out / NOISE, json.dumps(record))
            done[todo[i]] = record
            bar.set_postfix(budget_postfix(left_s), refresh=False)
            bar.update(1)  # after the postfix: a bar written to a file shows this update's values
            with tqdm.external_write_mode():
                say(f"noise floor repeat {todo[i]}: {cfg.reward_metric} {record['metric']:.4f}{_spread(cfg, record)}, "
                    f"{record['latency_ms']:.2f} ms/request, {record['seconds']:.0f}s")
    finally:
        bar.close()
    return summarize_floor(cfg, arch, [done[r] for r in sorted(done)])


def cost_fields(res: dict[str, Any]) -> dict[str, Any]:
    """What a logged child or noise-floor repeat records of its cost: ``seconds``, and of those the
    one-off frozen pass (``frozen_s``) over ``frozen_texts`` texts its process had not memoised."""
    return {"seconds": round(res["seconds"], 3), "frozen_s": round(res.get("frozen_s", 0.0), 3),
            "frozen_texts": int(res.get("frozen_texts", 0))}


def summarize_floor(cfg: SearchConfig, arch: Architecture, repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Floor statistics: the std of a K-seed mean across seed sets, and the per-seed std."""
    if not repeats:
        return {}
    means = [r["metric"] for r in repeats]
    per_seed = [v for r in repeats for v in seed_values(cfg, r)]
    within = [np.var(seed_values(cfg, r), ddof=1) for r in repeats if len(r["ap_seeds"]) > 1]
    return {
        "architecture": arch, "metric": cfg.reward_metric, "child_seeds": cfg.child_seeds, "repeats": len(repeats),
        "mean": round(float(np.mean(means)), 6),
        "std_of_mean": round(float(np.std(means, ddof=1)), 6) if len(means) > 1 else None,  # what a K-seed reward moves by
        "seed_std": round(float(np.sqrt(np.mean(within))), 6) if within else None,  # one seed's spread
        "reward_search_seeds": repeats[0]["reward"], "metric_search_seeds": repeats[0]["metric"],
        "latency_ms": float(np.median([r["latency_ms"] for r in repeats])),
        # what a child costs, for the budget's first estimates: the first repeat also pays the one-off frozen pass over
        # every text (82 s against 11 s on Home Depot), so it counts only when it is the only one, and then less
        # that pass (frozen_s; logs of earlier versions lack it)
        "child_seconds": float(np.median([steady_seconds(r) for r in (repeats[1:] or repeats)])),
        # this machine's speed at MiniLM's layers, from the first repeat's pass (the distillation's estimate scales with it)
        "frozen_s_per_text": (repeats[0]["frozen_s"] / repeats[0]["frozen_texts"]) if repeats[0].get("frozen_texts") else None,
        "per_repeat": [{k: r[k] for k in ("repeat", "seeds", "metric", "spread", "latency_ms")} for r in repeats],
        "all_seeds": [round(v, 6) for v in per_seed],
    }


# ---------------------------------------------------------------------- trials
def _run_trials(cfg: SearchConfig, space: Space, executor, out: Path, quiet: bool, say, elapsed: Callable[[], float],
                left_s: Callable[[], float] | None, floor: dict[str, Any], tables: dict[str, pd.DataFrame]) -> TrialLog:
    from tqdm.auto import tqdm

    from ..progress import progress

    agent = make_agent(space, cfg.hidden, cfg.controller_lr, cfg.baseline_decay, cfg.entropy_weight, cfg.seed)
    strategy = make_strategy(cfg.strategy, space, agent, cfg.population, cfg.sample_size)
    trials = TrialLog(out / TRIALS)
    next_trial = 0
    if (out / CHECKPOINT).exists():
        next_trial = int(agent.load(out / CHECKPOINT)["next_trial"])
    if len(trials):
        reused = sorted(t for t in trials.by_trial if t >= next_trial)  # of the batch a kill interrupted: proposed again, taken from the log
        say(f"resuming: {len(trials)} trials logged, strategy at step {agent.step}; its next batch starts at trial {next_trial}"
            + (f" (trial{'s' if len(reused) > 1 else ''} {', '.join(map(str, reused))} of it logged: reused, not rerun)" if reused else ""))
    seeds = child_seeds(cfg)

    def best() -> float:
        return max((r["reward"] for r in trials.by_trial.values()), default=float("nan"))

    def values() -> dict[str, str]:
        return {"best": f"{best():.4f}", **budget_postfix(left_s)}

    def postfix() -> None:  # set before the bar advances (refresh=False): a bar written to a file shows this update's values
        bar.set_postfix(values(), refresh=False)

    # under --budget-minutes the trial count is a cap the budget usually stops short of: counted to it, but with no ETA to
    # it; the postfix says how many of the budget's minutes are left instead
    bounded = f"; ≤ {cfg.trials} children, ≤ {cfg.budget_minutes:g} min in all" if cfg.budget_minutes else ""
    bar = progress(total=cfg.trials, initial=min(len(trials), cfg.trials), desc=f"search ({cfg.strategy}, {cfg.space}{bounded})",
                   unit="child", quiet=quiet, postfix=values(), **({"bar_format": NO_ETA_FORMAT} if cfg.budget_minutes else {}))
    last_plot, warned_busy, cores = time.monotonic(), False, usable_cores()
    try:
        while next_trial < cfg.trials:
            n = min(cfg.batch_size, cfg.trials - next_trial)
            if cfg.budget_minutes:
                # a child's steady seconds (less its one-off frozen pass), plus that pass over the children's texts once if the
                # processes that run them have not memoised those yet (a resumed search's new process has not)
                child_s = next_child_estimate_s(trials, floor)
                warm = memoised_tables(executor)
                once_s = frozen_pass_estimate_s(tables, floor, warm=warm, names=CHILD_TABLES, records=list(trials.cache.values()))
                ahead = max((t - next_trial + 1 for t in trials.by_trial if t >= next_trial), default=0)  # a killed batch's, logged
                fits = children_that_fit(n, left_s(), child_s, executor.parallelism,
                                         lambda m: retrain_estimate_s(cfg, space, trials, tables, floor, upcoming=m, warm=warm),
                                         logged=ahead, once_s=once_s)
                frozen = (f", + {once_s / 60:.1f} min once to pass the children's texts through the frozen layers in this process"
                          if once_s else "")
                if not fits:
                    reserve = retrain_estimate_s(cfg, space, trials, tables, floor, upcoming=1, warm=warm)
                    say(f"--budget-minutes {cfg.budget_minutes:g}: sampling stops after {next_trial} trials ({elapsed() / 60:.1f} min "
                        f"elapsed; one more child ≈ {child_s / 60:.1f} min{frozen}, retraining the candidates ≈ {reserve / 60:.1f} min)")
                    break
                if fits < n:
                    say(f"--budget-minutes {cfg.budget_minutes:g}: this batch has {fits} of {n} children, what is left of the "
                        f"budget after retraining the candidates ({elapsed() / 60:.1f} min elapsed, ≈ {child_s / 60:.1f} min a child{frozen})")
                    n = fits
            history = [trials.by_trial[t] for t in range(next_trial) if t in trials.by_trial]
            batch = []
            for t, (arch, actions) in zip(range(next_trial, next_trial + n), strategy.propose(n, history)):
                logged = trials.by_trial.get(t)
                if logged is not None and arch_key(space.canonical(logged["architecture"])) != arch_key(arch):
                    raise ConfigError(f"{out / TRIALS}: trial {t} was {space.describe(logged['architecture'])}, but this search "
                                      f"samples {space.describe(arch)} there; the log belongs to another search (seed or settings)")
                batch.append((t, arch, actions))

            step = agent.step
            pending: dict[str, list[tuple[int, Architecture, list[int]]]] = {}  # arch key → trials waiting (first is trained)
            for t, arch, actions in batch:
                key = arch_key(arch)
                if t in trials.by_trial:
                    continue
                if key in trials.cache:
                    trials.append(trials.cached_copy(t, step, arch, actions, trials.cache[key]))
                    postfix()
                    bar.update(1)
                elif key in pending:
                    pending[key].append((t, arch, actions))
                else:
                    pending[key] = [(t, arch, actions)]
            keys = list(pending)
            for i, res in executor.map_unordered([child_job(cfg, space, pending[k][0][1], seeds) for k in keys]):
                (t, arch, actions), *repeats = pending[keys[i]]
                record = {"trial": t, "step": step, "architecture": arch, "actions": actions, **result_fields(cfg, res),
                          **cost_fields(res), "cached": False,
                          "finished_at": round(time.time(), 3),
                          "load_1m": load_average()}
                trials.append(record)
                for rt, rarch, ractions in repeats:
                    trials.append(trials.cached_copy(rt, step, rarch, ractions, record))
                postfix()
                bar.update(1 + len(repeats))
                busy = record["load_1m"] is not None and record["load_1m"] > cores + 0.5
                with tqdm.external_write_mode():  # a log line above the bar, not through it
                    if busy and not warned_busy:
                        warned_busy = True
                        say(f"note: the machine is busy (load average {record['load_1m']:.1f} on {cores} cores) while "
                            "children are timed: their served latencies are inflated and move with the load (each trial line "
                            "keeps load_1m); the saved models are timed again side by side at the end")
                    say(f"trial {t}: reward {record['reward']:.4f} ({cfg.reward_metric} {record['metric']:.4f}{_spread(cfg, record)}, "
                        f"{record['latency_ms']:.2f} ms/request) in {record['seconds']:.1f}s: {space.describe(arch)}")

            strategy.learn([trials.by_trial[t]["actions"] for t, _, _ in batch], [trials.by_trial[t]["reward"] for t, _, _ in batch])
            next_trial += n
            agent.save(out / CHECKPOINT, {"next_trial": next_trial, "strategy": cfg.strategy, "elapsed_s": round(elapsed(), 3)})
            if time.monotonic() - last_plot >= PLOT_EVERY_S:
                write_plots(out, trials, cfg, floor)
                last_plot = time.monotonic()
    finally:
        bar.close()
    write_plots(out, trials, cfg, floor)
    return trials


def _spread(cfg: SearchConfig, record: dict[str, Any]) -> str:
    """" ± s over seeds" for a log line, or " (one seed: no spread)" under one child seed, whose spread is not measured
    (it read "± 0.0000")."""
    return f" ± {record['spread']:.4f} over seeds" if cfg.child_seeds > 1 else " (one seed: no spread)"


def next_child_estimate_s(trials: TrialLog, floor: dict[str, Any]) -> float:
    """A child's steady seconds (:func:`.final.steady_seconds`: less the one-off frozen pass its
    process paid), the median over the trained trials, or the noise floor's before any."""
    done = [steady_seconds(r) for r in trials.cache.values()]
    return float(np.median(done)) if done else float(floor.get("child_seconds") or 0.0)


def children_that_fit(n: int, left_s: float, child_s: float, parallelism: int, reserve_s: Callable[[int], float],
                      logged: int = 0, once_s: float = 0.0) -> int:
    """How many of the next batch's ``n`` children ``--budget-minutes`` still has room for: the largest
    m ≤ n whose batch (``once_s`` + ``child_s`` × ⌈m / parallelism⌉ seconds; ``once_s``: the frozen
    pass over the children's texts that the batch's processes have not memoised) plus ``reserve_s(m)``
    (retraining the candidates, distillation and timing once those m are in) fits in ``left_s``; 0
    when not one does.

    Why not all or nothing: on 2 CPU cores a batch of 4 children takes ~3 minutes, and a search that
    stopped whenever a whole batch did not fit left most of those minutes unused (8 children where
    10 fit). A smaller last batch uses them; the strategies propose a batch one draw after another,
    so its children are the first m of the full batch's. ``logged``: children of this batch already
    in the trial log (a killed run's), which cost nothing and are always kept, so ``--resume`` never
    leaves a logged trial out of the batch it belonged to."""
    for m in range(n, 0, -1):
        if once_s + child_s * -(-m // max(1, parallelism)) + reserve_s(m) <= left_s:
            return max(m, min(logged, n))
    return min(logged, n)


def write_plots(out: Path, trials: TrialLog, cfg: SearchConfig, floor: dict[str, Any]) -> None:
    records = trials.records()
    if not records:
        return
    name = {"rl": "REINFORCE", "random": "random search", "evolution": "regularized evolution"}[cfg.strategy]
    plot_rewards(records, out / "rewards.png", decay=cfg.baseline_decay, floor=floor,
                 title=f"{name} ({cfg.space} space): reward per step")
    plot_pareto(records, out / "pareto.png", floor=floor, metric=cfg.reward_metric)
    plot_noise(records, out / "noise.png", floor=floor, metric=cfg.reward_metric)
