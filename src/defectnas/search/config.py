"""``SearchConfig``: every setting of an architecture search, saved as ``search.json``.

Why its own file: a search is resumable, so what was decided when it started (seed, budget,
reward, controller batch, the latency target it measured) must be read back and must not be
silently changed by the flags of a ``--resume``. Only the fields in ``RESUMABLE`` (how many
trials, how many to retrain, where children run) may change between runs of one search.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import VARIANTS
from ..errors import ConfigError

SEARCH_FILE = "search.json"
STRATEGIES = ("rl", "random", "evolution")
SPACE_NAMES = ("serving", "seed")  # space.SPACES's names (a test keeps them equal); here without importing torch
REWARD_METRICS = ("ap", "f1")
RESUMABLE = ("trials", "top_k", "workers", "ray_address", "threads", "budget_minutes", "pareto_max", "pareto_min_ratio", "distill_query", "distill_epochs")  # may differ on --resume
MEASURED = ("space_settings", "noise_floor")  # written into search.json beside the settings; not settings
CPU_RETRAIN = {"final_rows": 12000, "final_epochs": 1}  # retrain budget when children train on a CPU (README: search cost)
DERIVED = ("batch_size", "latency_target_ms")  # 0 means "decide at the start"; the saved value wins


@dataclass
class SearchConfig:
    """One architecture search (flags of ``defectnas search`` map onto these fields)."""

    data: str = ""  # table of query–product pairs (any format load_pairs reads)
    load_kwargs: dict[str, Any] = field(default_factory=dict)  # load_pairs options (format, columns, ...)
    space: str = "serving"  # "serving": what moves accuracy or served latency; "seed": the paper's per-layer ops
    space_options: dict[str, Any] = field(default_factory=dict)  # the space's option lists, e.g. {"title_trainable": [0, 1, 2]}
    trials: int = 60  # children sampled and evaluated (cached repeats included), unless budget_minutes ends sampling first
    strategy: str = "rl"  # "rl": LSTM controller + REINFORCE; "random": uniform; "evolution": regularized evolution
    reward_metric: str = "ap"  # "ap": average precision on the whole validation split (threshold-free); "f1": F1 at the tuned threshold
    child_seeds: int = 2  # K: every child trains under the same K seeds (common random numbers); reward = their mean
    latency_weight: float = 0.0  # W in metric·(latency/target)^(−W) (MnasNet); 0: no soft trade-off
    latency_target_ms: float = 0.0  # target ms per request (1 query × 100 cached products); 0: the default architecture's, measured
    latency_budget_ms: float = 0.0  # hard budget per served request: children over it get reward 0 (TuNAS); 0: none (the default); negative: refused
    latency_repeats: int = 30  # timed requests per child (the median is kept; at least 30)
    child_epochs: int = 1  # classification epochs of a search child (a second epoch never won validation F1 in our runs)
    child_rows: int = 4000  # training pairs per child, a fixed subset (0: all); 4k: architecture ICC(3,1) 0.91 on Home Depot, a third of 12k's CPU cost (README)
    child_valid_rows: int = 0  # validation pairs scoring a child, a fixed subset (0: the whole validation split)
    noise_repeats: int = 3  # the noise floor: the default architecture under this many K-seed sets (0: skip)
    top_k: int = 2  # best distinct architectures (by reward) retrained with the full budget
    pareto_max: int = 3  # at most this many Pareto-front architectures retrained and saved under pareto/<n>/
    pareto_min_ratio: float = 0.8  # ...and only those whose search metric is at least this share of train's default's (the floor's, same seeds); 0: any
    final_seeds: int = 2  # fresh seeds per retrain (top-k, front, and train's default for the paired test)
    final_epochs: int = -1  # epochs of a retrain (0: the model options' epochs; -1: auto, 1 on a CPU, else 0)
    final_rows: int = -1  # training pairs of a retrain, a fixed subset (0: all; -1: auto, 12,000 on a CPU, else all)
    distill_query: int = 2  # after the retrains, distil best/'s query tower into this many pre-trained layers, the student measured and put on the front (0: off)
    distill_epochs: int = 4  # epochs of that distillation (distill-query's default; ~5 min on Home Depot's sample, 2 CPU cores)
    budget_minutes: float = 30.0  # wall time of the whole search, retrains included: sampling stops when what is left only covers the retrains' estimate; 0: no bound
    workers: int = 1  # children evaluated at once (local processes, or Ray tasks with ray_address)
    batch_size: int = 0  # architectures per strategy step (0: rl max(4, workers), others the number of workers)
    ray_address: str = ""  # run children as Ray tasks: "auto", "local", or "ray://host:port"
    matching: bool = False  # seed space: add the multi-perspective matching layer (the dl-rl-ml search); serving searches it
    variant: str = "dl-gs"  # loss of children and final models (see TrainConfig.variant)
    seed: int = 0  # seeds the strategy's sampling, the child and retrain seeds, and the split unless split_seed is set
    split_seed: int = -1  # seeds the query split (-1: seed); searches of several seeds on one split compare on the same test queries
    valid_frac: float = 0.1  # share of queries for validation (the reward)
    test_frac: float = 0.2  # share of queries for test (metrics of the final models and the paired test)
    num_layers: int = 5  # seed space: product-encoder layers searched (serving: up to 5 cells)
    population: int = 20  # evolution: population size (the most recent trials)
    sample_size: int = 5  # evolution: tournament size
    hidden: int = 40  # controller LSTM units
    controller_lr: float = 0.02  # controller Adam learning rate
    entropy_weight: float = 1e-3  # REINFORCE entropy bonus
    baseline_decay: float = 0.9  # REINFORCE moving-average baseline decay
    threads: int = 0  # torch threads per child while training (0: the cores / workers); latency is always timed at 1, as serve runs
    options: dict[str, Any] = field(default_factory=dict)  # base DefectClassifier options (d_model, embedding_init, ...)

    def __post_init__(self) -> None:
        if not isinstance(self.data, (str, os.PathLike)):  # a DataFrame: search.json could not hold it, nor worker processes read it
            raise ConfigError(f"data must be a path to a table file, not a {type(self.data).__name__}: a search saves its settings "
                              "as JSON and its workers read the file (write the frame first, e.g. df.to_parquet('pairs.parquet'))")
        self.data = str(self.data)
        for name, valid in (("strategy", STRATEGIES), ("variant", VARIANTS), ("space", SPACE_NAMES), ("reward_metric", REWARD_METRICS)):
            if getattr(self, name) not in valid:
                raise ConfigError(f"{_flag(name)} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        for name in ("trials", "child_epochs", "workers", "child_seeds", "final_seeds", "distill_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("threads", "top_k", "pareto_max", "pareto_min_ratio", "noise_repeats", "budget_minutes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must not be negative, got {getattr(self, name):g}")
        if self.distill_query < 0:
            raise ConfigError(f"{_flag('distill_query')} must be 0 (off) or a number of query layers, got {self.distill_query}")
        for name in ("latency_weight", "latency_target_ms", "latency_budget_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must not be negative, got {getattr(self, name):g} (0: none)")
        if "title_layers" in self.options:
            raise ConfigError("title_layers is what the search chooses: remove it from the search's --config")
        if self.space == "serving" and self.matching:
            raise ConfigError("the serving space searches the matching layer itself; --matching is for --space seed")
        if min(self.final_rows, self.final_epochs) < -1:
            raise ConfigError("final_rows and final_epochs must be -1 (auto), 0 (the full budget) or positive")
        on_cpu = str(self.options.get("device", "cpu")).startswith("cpu")
        if self.final_rows == -1:  # auto: on 2 CPU cores full-budget retrains alone exceed a 30-minute search (README)
            self.final_rows = CPU_RETRAIN["final_rows"] if on_cpu else 0
        if self.final_epochs == -1:
            self.final_epochs = CPU_RETRAIN["final_epochs"] if on_cpu else 0

    @property
    def data_seed(self) -> int:
        """The seed of the query split (``split_seed``, or ``seed`` when it is -1)."""
        return self.seed if self.split_seed < 0 else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown search setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**d)


def load_saved(out: str | Path) -> SearchConfig | None:
    """The config a search in ``out`` was started with, or None."""
    path = Path(out) / SEARCH_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return SearchConfig.from_dict({k: v for k, v in saved.items() if k not in MEASURED})
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg})") from None


def merge_for_resume(saved: SearchConfig, given: dict[str, Any]) -> SearchConfig:
    """``saved`` with the resumable fields of ``given`` applied; other differences are an error."""
    current = saved.to_dict()
    clashes = []
    for key, value in given.items():
        if key in RESUMABLE:
            current[key] = value
        elif key in DERIVED and not value:
            continue
        elif current.get(key) != value:
            clashes.append(f"{key}: started with {current.get(key)!r}, now {value!r}")
    if clashes:
        raise ConfigError("--resume continues the search as it was started; these settings differ: " + "; ".join(clashes)
                          + f" (only {', '.join(RESUMABLE)} may change; use a new --out for a new search)")
    return SearchConfig.from_dict(current)


def _flag(field: str) -> str:
    """How an error names a setting: the command-line flag and the field of --config JSON, e.g. "--top-k (top_k)"."""
    return f"--{field.replace('_', '-')} ({field})"
