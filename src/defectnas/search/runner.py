"""The search loop: sample a batch, evaluate the children, log them, update, checkpoint; repeat.

Why written this way: a search runs for tens of minutes on a CPU and must survive being killed
at any moment (SIGKILL included). The order of writes is what makes that safe:

1. the controller samples a batch of architectures (trial numbers are consecutive);
2. each child, when it finishes, is appended to ``trials.jsonl`` (fsynced) — a repeat of an
   architecture already trained is logged at once, marked ``cached``, without training;
3. when the whole batch is logged, the controller takes one REINFORCE step and the agent state
   (weights, Adam moments, sampling generator, baseline, next trial) is written atomically to
   ``controller.safetensors``.

``--resume`` loads the checkpoint (the state *before* the unfinished batch) and samples that
batch again: the generator and weights are those of the first run, so the architectures are
the same; trials that already have a line are taken from it, not rerun; the others are run;
then the update happens exactly as it would have. So no finished trial is lost, none is run
twice, and the sequence equals an uninterrupted run with the same seed. After the last trial
the top-k architectures are retrained (:mod:`defectnas.search.final`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import ConfigError
from ..storage import atomic_write_json
from .config import SEARCH_FILE, SearchConfig, load_saved, merge_for_resume
from .controller import Controller
from .executors import make_executor
from .final import retrain_top_k
from .plots import plot_pareto, plot_rewards
from .reinforce import Reinforce
from .space import Architecture, SearchSpace, arch_key, describe
from .trials import TrialLog

CHECKPOINT = "controller.safetensors"
TRIALS = "trials.jsonl"
REFERENCE = "reference.json"
PLOT_EVERY = 10  # controller steps between plot refreshes


@dataclass
class SearchResult:
    out: Path
    trials: list[dict[str, Any]] = field(default_factory=list)  # trials.jsonl, in trial order
    top_k: list[dict[str, Any]] = field(default_factory=list)  # top_k.json
    best_dir: Path | None = None  # the best retrained model directory
    seconds: float = 0.0  # wall time of this run (not of earlier runs of a resumed search)


def run_search(cfg: SearchConfig, out: str | Path, *, resume: bool = False, quiet: bool = True,
               log: Callable[[str], None] | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) the search described by ``cfg`` in folder ``out``."""
    started = time.perf_counter()
    out = Path(out)
    say = log or (lambda message: None)
    saved = load_saved(out)
    if saved is not None and not resume:
        raise ConfigError(f"{out} already holds a search; pass --resume to continue it, or choose a new --out")
    if saved is None and (out / TRIALS).exists():
        raise ConfigError(f"{out} has {TRIALS} but no {SEARCH_FILE}; choose a new --out")
    if saved is not None:
        cfg = merge_for_resume(saved, cfg.to_dict())
    out.mkdir(parents=True, exist_ok=True)

    space = SearchSpace(num_layers=cfg.num_layers)
    d_model = int(cfg.options.get("d_model", 64))
    if d_model % space.min_d_model_multiple():
        raise ConfigError(f"d_model={d_model} must be a multiple of {space.min_d_model_multiple()} (attention heads {space.heads})")
    tables = prepare_tables(cfg)
    say(f"search data: {len(tables['child_train'])} training pairs per child, {len(tables['child_valid'])} validation pairs; "
        f"final models: {len(tables['train'])} train, {len(tables['valid'])} valid, {len(tables.get('test', []))} test")
    executor = make_executor(tables, cfg.workers, cfg.ray_address, cfg.threads)
    try:
        if not cfg.batch_size:
            cfg.batch_size = max(cfg.workers, executor.parallelism)
        atomic_write_json(out / SEARCH_FILE, cfg.to_dict())
        if cfg.latency_weight > 0 and not cfg.latency_target_ms:
            cfg.latency_target_ms = _reference_latency(cfg, space, executor, out, say)
            atomic_write_json(out / SEARCH_FILE, cfg.to_dict())
        trials = _run_trials(cfg, space, executor, out, quiet, say)
        top, best_dir = retrain_top_k(cfg, out, trials, executor, final_options(cfg), quiet, say)
    finally:
        executor.shutdown()
    return SearchResult(out, trials.records(), top, best_dir, time.perf_counter() - started)


# ------------------------------------------------------------------------ data
def prepare_tables(cfg: SearchConfig) -> dict[str, pd.DataFrame]:
    """Split by query once; children get fixed row subsets, final models the whole splits."""
    from ..data import load_pairs, split_by_query

    df = load_pairs(cfg.data, **cfg.load_kwargs)
    parts = split_by_query(df, valid_frac=cfg.valid_frac, test_frac=cfg.test_frac, seed=cfg.seed)
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
    return tables


def child_options(cfg: SearchConfig) -> dict[str, Any]:
    """DefectClassifier options of a search child: the base options with the child budget."""
    return {**cfg.options, "variant": cfg.variant, "matching": cfg.matching, "epochs": cfg.child_epochs, "seed": cfg.seed}


def final_options(cfg: SearchConfig) -> dict[str, Any]:
    """DefectClassifier options of a top-k retrain: the base options with the full budget."""
    opts = {**cfg.options, "variant": cfg.variant, "matching": cfg.matching, "seed": cfg.seed}
    if cfg.final_epochs:
        opts["epochs"] = cfg.final_epochs
    return opts


def child_job(cfg: SearchConfig, architecture: Architecture) -> dict[str, Any]:
    return {"architecture": architecture, "options": child_options(cfg), "latency_repeats": cfg.latency_repeats,
            "tables": {"train": "child_train", "valid": "child_valid"}}


def _reference_latency(cfg: SearchConfig, space: SearchSpace, executor, out: Path, say) -> float:
    """The latency target: the default (hand-designed) architecture, trained and timed like a child."""
    arch = space.default_architecture()
    (_, result), = executor.map_unordered([child_job(cfg, arch)])
    atomic_write_json(out / REFERENCE, {"architecture": arch, **result})
    say(f"latency target: {result['latency_ms']:.2f} ms per 100 pairs (default architecture, F1 {result['f1']:.4f})")
    return float(result["latency_ms"])


# ---------------------------------------------------------------------- trials
def _run_trials(cfg: SearchConfig, space: SearchSpace, executor, out: Path, quiet: bool, say) -> TrialLog:
    from tqdm.auto import tqdm

    from .child import reward

    agent = Reinforce(Controller(space, hidden=cfg.hidden, seed=cfg.seed), lr=cfg.controller_lr,
                      baseline_decay=cfg.baseline_decay, entropy_weight=cfg.entropy_weight, seed=cfg.seed)
    trials = TrialLog(out / TRIALS)
    next_trial = 0
    if (out / CHECKPOINT).exists():
        next_trial = int(agent.load(out / CHECKPOINT)["next_trial"])
    if len(trials):
        say(f"resuming: {len(trials)} trials logged, controller at step {agent.step}, next trial {next_trial}")

    def best() -> float:
        return max((r["reward"] for r in trials.by_trial.values()), default=float("nan"))

    bar = tqdm(total=cfg.trials, initial=min(len(trials), cfg.trials), desc="search", unit="child", disable=quiet)
    bar.set_postfix(best=f"{best():.4f}")
    try:
        while next_trial < cfg.trials:
            n = min(cfg.batch_size, cfg.trials - next_trial)
            batch = []
            for t in range(next_trial, next_trial + n):
                arch = agent.sample().architecture if cfg.strategy == "rl" else space.sample_uniform(agent.generator)
                logged = trials.by_trial.get(t)
                if logged is not None and arch_key(space.canonical(logged["architecture"])) != arch_key(arch):
                    raise ConfigError(f"{out / TRIALS}: trial {t} was {describe(logged['architecture'])}, but this search samples "
                                      f"{describe(arch)} there; the log belongs to another search (seed or settings)")
                batch.append((t, arch))

            step = agent.step
            pending: dict[str, list[tuple[int, Architecture]]] = {}  # arch key → trials waiting on it (first is trained)
            for t, arch in batch:
                key = arch_key(arch)
                if t in trials.by_trial:
                    continue
                if key in trials.cache:
                    trials.append(trials.cached_copy(t, step, arch, trials.cache[key]))
                    bar.update(1)
                elif key in pending:
                    pending[key].append((t, arch))
                else:
                    pending[key] = [(t, arch)]
            keys = list(pending)
            for i, res in executor.map_unordered([child_job(cfg, pending[k][0][1]) for k in keys]):
                (t, arch), *repeats = pending[keys[i]]
                record = {"trial": t, "step": step, "architecture": arch,
                          "reward": reward(res["f1"], res["latency_ms"], cfg.latency_target_ms, cfg.latency_weight),
                          "f1": res["f1"], "latency_ms": round(res["latency_ms"], 4), "params": res["params"],
                          "seconds": round(res["seconds"], 3), "cached": False, "finished_at": round(time.time(), 3)}
                trials.append(record)
                for rt, rarch in repeats:
                    trials.append(trials.cached_copy(rt, step, rarch, record))
                bar.update(1 + len(repeats))
                bar.set_postfix(best=f"{best():.4f}")
                with tqdm.external_write_mode():  # a log line above the bar, not through it
                    say(f"trial {t}: reward {record['reward']:.4f} (F1 {record['f1']:.4f}, {record['latency_ms']:.2f} ms/100) "
                        f"in {record['seconds']:.1f}s: {describe(arch)}")

            rewards = [trials.by_trial[t]["reward"] for t, _ in batch]
            agent.update([a for _, a in batch], rewards, learn=cfg.strategy == "rl")
            next_trial += n
            agent.save(out / CHECKPOINT, {"next_trial": next_trial, "strategy": cfg.strategy})
            if agent.step % PLOT_EVERY == 0:
                write_plots(out, trials, cfg)
    finally:
        bar.close()
    write_plots(out, trials, cfg)
    return trials


def write_plots(out: Path, trials: TrialLog, cfg: SearchConfig) -> None:
    records = trials.records()
    if not records:
        return
    plot_rewards(records, out / "rewards.png", decay=cfg.baseline_decay,
                 title=f"{'REINFORCE' if cfg.strategy == 'rl' else 'random search'}: reward per child")
    plot_pareto(records, out / "pareto.png")
