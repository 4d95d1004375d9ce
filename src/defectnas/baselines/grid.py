"""``dl-gs``: grid search over encoder depths, widths and heads, picked on validation F1.

Why: before reinforcement-learning search, the honest way to choose an architecture is to try a
grid of hand-picked ones and keep the best on validation. This is that baseline: every grid
point is the same :class:`~defectnas.estimator.DefectClassifier` (plain cross-entropy, variant
``dl-gs``, unless the options say otherwise) with uniform layers of the given depth, width and
head count; the winner is the one with the best validation F1 (fewer parameters on a tie).
The saved directory is the winner's ordinary model directory plus ``grid.json`` (every trial),
so ``DefectClassifier.load(dir)`` reads it as well.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..storage import atomic_write_json
from ._common import ThresholdedClassifier, check_fitted

GRID_FILE = "grid.json"
DEFAULT_GRID = {  # 8 points; the query encoder is kept at the default depth (it runs online)
    "query_depth": (2,),  # query-encoder layers
    "title_depth": (2, 5),  # title-encoder layers
    "d_model": (32, 64),  # width of both encoders
    "heads": (1, 4),  # attention heads in every layer
}


def grid_points(grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a fixed order."""
    unknown = sorted(set(grid) - set(DEFAULT_GRID))
    if unknown:
        raise ConfigError(f"unknown grid key(s) {', '.join(unknown)}; valid: {', '.join(DEFAULT_GRID)}")
    full = {k: tuple(grid.get(k, v)) for k, v in DEFAULT_GRID.items()}
    if any(len(v) == 0 for v in full.values()):
        raise ConfigError("every grid key needs at least one value")
    return [dict(zip(full, combo)) for combo in itertools.product(*full.values())]


def point_options(point: dict[str, Any]) -> dict[str, Any]:
    """DefectClassifier options of one grid point (uniform attention layers)."""
    if point["d_model"] % point["heads"]:
        raise ConfigError(f"d_model {point['d_model']} is not divisible by heads {point['heads']}")
    layer = {"heads": int(point["heads"])}
    return {"d_model": int(point["d_model"]), "query_layers": [dict(layer) for _ in range(point["query_depth"])],
            "title_layers": [dict(layer) for _ in range(point["title_depth"])]}


class GridSearchClassifier(ThresholdedClassifier):
    """Fit one DefectClassifier per grid point; predict with the validation-F1 winner."""

    def __init__(self, grid: dict[str, Sequence[Any]] | None = None, **options: Any) -> None:
        self.grid = {k: list(v) for k, v in (grid or DEFAULT_GRID).items()}  # {key: values}, keys of DEFAULT_GRID
        self.options = {"variant": "dl-gs", **options}  # DefectClassifier options shared by every point

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, quiet: bool = True, log: Callable[[str], None] | None = None) -> "GridSearchClassifier":
        from ..estimator import DefectClassifier
        from ..model.bert import shared_memos

        points = grid_points(self.grid)
        self.trials_, best = [], None
        with shared_memos():  # every point reads the same frozen pre-trained states: compute them once
            for i, point in enumerate(points):
                started = time.perf_counter()
                clf = DefectClassifier(**{**self.options, **point_options(point)}).fit(train, valid, quiet=quiet)
                trial = {"trial": i, **point, "valid_f1": float(clf.valid_f1_), "params": clf.num_parameters(),
                         "epochs": len(clf.history_), "seconds": round(time.perf_counter() - started, 1)}
                self.trials_.append(trial)
                if log:
                    log(f"grid {i + 1}/{len(points)}: {json.dumps(trial)}")
                if best is None or (trial["valid_f1"], -trial["params"]) > (best[0]["valid_f1"], -best[0]["params"]):
                    best = (trial, clf)
        self.best_point_, self.best_ = best
        self.threshold_, self.valid_f1_ = self.best_.threshold_, self.best_.valid_f1_
        return self

    def predict_proba(self, queries: Sequence[str] | pd.DataFrame, titles: Sequence[str] | None = None) -> np.ndarray:
        check_fitted(self, "best_")
        return self.best_.predict_proba(queries, titles)

    def num_parameters(self) -> int:
        check_fitted(self, "best_")
        return self.best_.num_parameters()

    def save(self, directory: str | Path) -> Path:
        """The winner's model directory plus grid.json (the grid and every trial)."""
        check_fitted(self, "best_")
        out = self.best_.save(directory)
        atomic_write_json(out / GRID_FILE, {"grid": self.grid, "options": self.options, "best": self.best_point_, "trials": self.trials_})
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "GridSearchClassifier":
        from ..estimator import DefectClassifier

        d = Path(directory)
        best = DefectClassifier.load(d, device=device)
        record = json.loads((d / GRID_FILE).read_text(encoding="utf-8")) if (d / GRID_FILE).exists() else {}
        clf = cls(grid=record.get("grid"), **record.get("options", {}))
        clf.best_, clf.best_point_, clf.trials_ = best, record.get("best"), record.get("trials", [])
        clf.threshold_, clf.valid_f1_ = best.threshold_, best.valid_f1_
        return clf
