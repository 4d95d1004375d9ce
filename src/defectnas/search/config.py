"""``SearchConfig``: every setting of an architecture search, saved as ``search.json``.

Why its own file: a search is resumable, so what was decided when it started (seed, budget,
reward, controller batch, the latency target it measured) must be read back and must not be
silently changed by the flags of a ``--resume``. Only the fields in ``RESUMABLE`` (how many
trials, how many to retrain, where children run) may change between runs of one search.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import VARIANTS
from ..errors import ConfigError

SEARCH_FILE = "search.json"
STRATEGIES = ("rl", "random")
RESUMABLE = ("trials", "top_k", "workers", "ray_address", "threads")  # may differ on --resume
DERIVED = ("batch_size", "latency_target_ms")  # 0 means "decide at the start"; the saved value wins


@dataclass
class SearchConfig:
    """One architecture search (flags of ``defectnas search`` map onto these fields)."""

    data: str = ""  # table of query–product pairs (any format load_pairs reads)
    load_kwargs: dict[str, Any] = field(default_factory=dict)  # load_pairs options (format, columns, ...)
    trials: int = 200  # children sampled and evaluated (cached repeats included)
    top_k: int = 10  # best distinct architectures retrained with the full budget
    strategy: str = "rl"  # "rl": LSTM controller + REINFORCE; "random": uniform sampling (the baseline)
    latency_weight: float = 0.0  # W in F1·(latency/target)^(−W); 0: reward = validation F1
    latency_target_ms: float = 0.0  # target per 100 pairs; 0: measured on the default architecture at the start
    latency_repeats: int = 7  # timed repeats per child (the median is kept)
    child_epochs: int = 1  # classification epochs of a search child
    child_rows: int = 2000  # training pairs per child, a fixed random subset (0: all)
    child_valid_rows: int = 2000  # validation pairs scoring a child, a fixed subset (0: the whole validation split)
    final_epochs: int = 0  # epochs of a top-k retrain (0: the model options' epochs, default 8)
    final_rows: int = 0  # training pairs of a top-k retrain (0: all)
    workers: int = 1  # children evaluated at once (local processes, or Ray tasks with ray_address)
    batch_size: int = 0  # architectures per controller step (0: the number of workers at the start)
    ray_address: str = ""  # run children as Ray tasks: "auto", "local", or "ray://host:port"
    matching: bool = False  # add the multi-perspective matching layer (the dl-rl-ml search)
    variant: str = "dl-gs"  # loss of children and final models (see TrainConfig.variant)
    seed: int = 0  # seeds the split, the controller, sampling and every child
    valid_frac: float = 0.1  # share of queries for validation (the reward)
    test_frac: float = 0.2  # share of queries for test (metrics of the final models)
    num_layers: int = 5  # product-encoder layers searched
    hidden: int = 40  # controller LSTM units
    controller_lr: float = 0.02  # controller Adam learning rate
    entropy_weight: float = 1e-3  # REINFORCE entropy bonus
    baseline_decay: float = 0.9  # REINFORCE moving-average baseline decay
    threads: int = 1  # torch threads per child (small children gain little from more; more oversubscribe busy CPUs)
    options: dict[str, Any] = field(default_factory=dict)  # base DefectClassifier options (d_model, embedding_init, ...)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.trials < 1 or self.top_k < 0 or self.child_epochs < 1 or self.workers < 1 or self.threads < 1:
            raise ConfigError("trials, child_epochs, workers and threads must be at least 1, top_k at least 0")
        if self.latency_weight < 0 or self.latency_target_ms < 0:
            raise ConfigError("latency_weight and latency_target_ms must not be negative")
        if "title_layers" in self.options:
            raise ConfigError("title_layers is what the search chooses: remove it from the search's --config")

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
        return SearchConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
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
