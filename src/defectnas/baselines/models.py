"""The models of the comparison: each name, and how it is trained under a budget.

Why a registry: ``defectnas compare`` (and the benchmarks) must train every model the same way
from the same inputs — the training and validation splits, a :class:`Budget`, the user's options
and a seed — and get back something with ``predict_proba(queries, titles)``, ``threshold_`` and
``num_parameters()``. Each name maps to one small function; ``--fast`` is the :data:`FAST` budget.
``dl-rl`` / ``dl-rl-ml`` go through :func:`search_model_hook` to the RL search of
:mod:`defectnas.search`; without that module they raise a one-line ConfigError, never a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import ConfigError

MODELS = ("dl-gs", "transfer", "dl-jl", "dl-rl", "dl-rl-ml", "seed-two-tower", "lstm", "coattention", "gbdt", "bert")
# the seed paper's encoders: pre-trained word embeddings only, no contextual layers, no matching
SEED_STYLE = {"backbone_layers": 0, "query_backbone_layers": 0, "matching": False}
FLOOR = "tfidf"
SEARCH_MODELS = ("dl-rl", "dl-rl-ml")


@dataclass
class Budget:
    """How much training each model gets; ``--fast`` uses :data:`FAST`."""

    max_train_rows: int = 0  # 0: every training row; else a seeded sample of training *queries* up to this many rows
    max_valid_rows: int = 0  # the same for the validation split (early stopping and the threshold)
    max_test_rows: int = 0  # the same for the test split (every model is still scored on the same rows)
    epochs: int = 0  # two-tower models (dl-*, lstm, coattention): maximum classification epochs (0: TrainConfig's default)
    pretrain_epochs: int = 0  # transfer: triplet pre-training epochs (0: TrainConfig's default)
    grid: dict = field(default_factory=lambda: {"title_depth": [2, 5], "d_model": [32, 64], "heads": [1, 4]})  # dl-gs grid
    grid_epochs: int = 4  # dl-gs: epochs per grid point
    gbdt_rounds: int = 1000  # gbdt: maximum boosting rounds (early stopping on validation)
    bert_rows: int = 12000  # bert: training rows (seeded sample); CPU fine-tuning is the slowest thing here
    bert_epochs: int = 1  # bert: passes over those rows
    bert_max_length: int = 64  # bert: word pieces per (query, title) pair
    bert_batch: int = 32  # bert: pairs per step
    search_trials: int = 40  # dl-rl / dl-rl-ml: architectures the controller samples
    search_child_rows: int = 4000  # dl-rl / dl-rl-ml: training pairs per search child (1 epoch each)
    search_child_valid_rows: int = 0  # dl-rl / dl-rl-ml: validation pairs scoring a child (0: the whole validation split)
    latency_repeats: int = 9  # timed calls per model (median reported)


FULL = Budget(epochs=4)  # the paper's baselines as measured (README, "The full comparison"): 4 epochs with early stopping, not `train`'s 1
FAST = Budget(max_train_rows=3000, max_valid_rows=2000, max_test_rows=5000, epochs=2, pretrain_epochs=1,
              grid={"title_depth": [2, 5], "d_model": [64], "heads": [4]}, grid_epochs=1, gbdt_rounds=300,
              bert_rows=1000, bert_epochs=1, bert_max_length=48, bert_batch=32,
              search_trials=4, search_child_rows=1000, search_child_valid_rows=1000, latency_repeats=5)


def budget_that_ran(budget: Budget, options: dict[str, Any]) -> Budget:
    """``budget`` as the models got it: the options' ``epochs`` (``--epochs``, ``--config``) replace
    the two-tower and grid epochs and ``pretrain_epochs`` the transfer's, as :meth:`Context.neural`
    and :func:`_fit_grid` apply them — what ``run.json`` must record for a run to be reproduced."""
    changes = {}
    if options.get("epochs") is not None:
        changes.update(epochs=int(options["epochs"]), grid_epochs=int(options["epochs"]))
    if options.get("pretrain_epochs") is not None:
        changes["pretrain_epochs"] = int(options["pretrain_epochs"])
    return replace(budget, **changes)


@dataclass
class Context:
    """What a model builder needs besides the data."""

    budget: Budget  # how much training each model gets
    options: dict[str, Any]  # user options for the two-tower models (flags / --config); defect_weight reaches gbdt and bert too
    seed: int  # seeds initialisation, batch order, sampling (one per repeat)
    threads: int  # torch / LightGBM threads
    quiet: bool  # no progress bars
    out: Path  # the comparison's folder (the searches write under out/search/)
    log: Callable[[str], None]  # progress messages

    def neural(self, **extra: Any) -> dict[str, Any]:
        """DefectClassifier options: the budget's epochs, then the user's options, then ``extra``; the seed last."""
        base = {"num_threads": self.threads}
        base.update({k: v for k, v in (("epochs", self.budget.epochs), ("pretrain_epochs", self.budget.pretrain_epochs)) if v > 0})
        return {**base, **self.options, **extra, "seed": self.seed}


# ------------------------------------------------------------------ the models
def _two_tower(variant: str, **extra: Any):
    def fit(train, valid, ctx: Context):
        from ..estimator import DefectClassifier

        return DefectClassifier(**ctx.neural(variant=variant, **extra)).fit(train, valid, quiet=ctx.quiet)
    return fit


def _fit_grid(train, valid, ctx: Context):
    from .grid import GridSearchClassifier

    opts = ctx.neural(epochs=ctx.options.get("epochs", ctx.budget.grid_epochs))
    return GridSearchClassifier(grid=ctx.budget.grid, **opts).fit(train, valid, quiet=ctx.quiet, log=ctx.log)


def _fit_gbdt(train, valid, ctx: Context):
    from .gbdt import GBDTClassifier

    return GBDTClassifier(num_rounds=ctx.budget.gbdt_rounds, defect_weight=ctx.options.get("defect_weight", 10.0),
                          num_threads=ctx.threads, seed=ctx.seed).fit(train, valid)


def _fit_bert(train, valid, ctx: Context):
    from .bert import CrossEncoderClassifier

    b = ctx.budget
    return CrossEncoderClassifier(model_name=ctx.options.get("pretrained_model", ""), max_length=b.bert_max_length, epochs=b.bert_epochs,
                                  batch_size=b.bert_batch, defect_weight=ctx.options.get("defect_weight", 10.0), max_train_rows=b.bert_rows,
                                  num_threads=ctx.threads, seed=ctx.seed).fit(train, valid, quiet=ctx.quiet, log=ctx.log)


def _fit_tfidf(train, valid, ctx: Context):
    from .tfidf import TfidfLogReg

    return TfidfLogReg(seed=ctx.seed).fit(train, valid)


def _search_api():
    """The search module's entry points, or None where this install has no search module."""
    try:
        from ..search.config import SearchConfig
        from ..search.runner import run_search
    except ImportError:
        return None
    return SearchConfig, run_search


def search_available() -> bool:
    return _search_api() is not None


def search_model_hook(name: str):
    """``dl-rl`` / ``dl-rl-ml``: the RL architecture search of :mod:`defectnas.search`.

    The search gets this comparison's split (written with a ``split`` column, which the search
    keeps as it is), searches on child-sized budgets, retrains the best architecture on the
    whole training split and hands back that model; its time counts as training time. Without
    the search module, asking for these models is a one-line ConfigError — never made-up numbers.
    """
    def fit(train, valid, ctx: Context):
        from ..estimator import DefectClassifier

        api = _search_api()
        if api is None:
            raise ConfigError(f"{name} needs the search module (defectnas.search), which this install does not have")
        SearchConfig, run_search = api
        folder = ctx.out / "search" / f"{name}-seed{ctx.seed}"
        if folder.exists():  # a leftover of an earlier compare into this --out: start afresh
            import shutil

            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        table = pd.concat([train.assign(split="train"), valid.assign(split="valid")], ignore_index=True)
        table[["query", "title", "label", "split"]].to_parquet(folder / "split.parquet", index=False)
        b = ctx.budget
        options = {k: v for k, v in ctx.neural().items() if k not in ("seed", "variant", "matching", "title_layers")}
        # the paper's search (the seed space, one seed per child, F1 reward); compare has its own test split
        cfg = SearchConfig(data=str(folder / "split.parquet"), space="seed", reward_metric="f1", child_seeds=1,
                           noise_repeats=0, trials=b.search_trials, top_k=1, pareto_max=0, final_seeds=1, child_epochs=1,
                           child_rows=b.search_child_rows, child_valid_rows=b.search_child_valid_rows,
                           final_epochs=options.pop("epochs", 0), final_rows=0, matching=name == "dl-rl-ml", test_frac=0.0,
                           latency_repeats=b.latency_repeats, seed=ctx.seed, threads=ctx.threads, options=options)
        result = run_search(cfg, folder / "search", quiet=True, log=ctx.log if not ctx.quiet else None)
        if result.best_dir is None:
            raise ConfigError(f"{name}: the search finished without a retrained best model")
        return DefectClassifier.load(result.best_dir)
    return fit


BUILDERS: dict[str, Callable] = {
    FLOOR: _fit_tfidf,
    "dl-gs": _fit_grid,
    "transfer": _two_tower("transfer"),
    "dl-jl": _two_tower("dl-jl"),
    "dl-rl": search_model_hook("dl-rl"),
    "dl-rl-ml": search_model_hook("dl-rl-ml"),
    "seed-two-tower": _two_tower("dl-jl", **SEED_STYLE, query_layers=[{}, {}], title_layers=[{}] * 5),
    "lstm": _two_tower("dl-jl", encoder="lstm", **SEED_STYLE),
    "coattention": _two_tower("dl-jl", interaction="coattention", **SEED_STYLE),
    "gbdt": _fit_gbdt,
    "bert": _fit_bert,
}


def parse_models(spec: str | None, echo: Callable[[str], None] = print) -> list[str]:
    """``a,b,c`` → names (validated); none → every model (the search ones only when available) + the floor."""
    if not spec:
        if search_available():
            return [FLOOR, *MODELS]
        echo(f"note: {', '.join(SEARCH_MODELS)} skipped: the search module is not available yet")
        return [FLOOR, *(m for m in MODELS if m not in SEARCH_MODELS)]
    names = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in BUILDERS]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join((*MODELS, FLOOR))}")
    if not names:
        raise ConfigError("--models is empty")
    return list(dict.fromkeys(names))
