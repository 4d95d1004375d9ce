"""Gradient-boosted trees (LightGBM) on hand-made pair features: the classic strong baseline.

Why: a GBDT on overlap, TF-IDF/BM25, number/unit and accessory features (see
:mod:`~defectnas.baselines.text_features`) is what a search team would try first; it trains in
seconds on a CPU, and its feature importances say which signals matter. Same rules as every
model here: defects weighted ``defect_weight`` times, early stopping on the validation split,
probabilities calibrated on it (:mod:`~defectnas.calibration`), and the F1-best calibrated
validation threshold applied to test. Saved as LightGBM's own text model (``booster.txt``) plus
JSON/safetensors feature statistics, ``calibration.json`` and ``config.json`` — never pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data.text import text_pairs
from ..errors import DataError
from ..storage import atomic_write_json
from ._common import CONFIG_FILE, ThresholdedClassifier, check_fitted, read_config, stamp
from .text_features import FEATURES, PairFeatures

BOOSTER_FILE = "booster.txt"


class GBDTClassifier(ThresholdedClassifier):
    """LightGBM binary classifier of (query, title) pairs; scikit-learn-style fit / predict_proba."""

    def __init__(self, num_rounds: int = 1000, learning_rate: float = 0.05, num_leaves: int = 31, min_data_in_leaf: int = 20,
                 feature_fraction: float = 0.9, defect_weight: float = 10.0, early_stopping: int = 50,
                 num_threads: int = 2, seed: int = 0) -> None:
        self.num_rounds = num_rounds  # maximum boosting rounds
        self.learning_rate = learning_rate  # shrinkage per tree
        self.num_leaves = num_leaves  # leaves per tree
        self.min_data_in_leaf = min_data_in_leaf  # smallest leaf
        self.feature_fraction = feature_fraction  # share of features each tree sees
        self.defect_weight = defect_weight  # sample weight of defects (the neural models' class weight)
        self.early_stopping = early_stopping  # rounds without a better validation average precision
        self.num_threads = num_threads  # LightGBM threads
        self.seed = seed

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("num_rounds", "learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction",
                                              "defect_weight", "early_stopping", "num_threads", "seed")}

    def _lgb_params(self) -> dict:
        return {"objective": "binary", "metric": "average_precision", "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
                "bagging_seed": self.seed, "feature_fraction_seed": self.seed, "seed": self.seed, "deterministic": True,
                "force_row_wise": True, "num_threads": self.num_threads, "verbosity": -1}

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame) -> "GBDTClassifier":
        """Fit features on the training titles, boost with early stopping on ``valid``, pick the threshold."""
        import lightgbm as lgb

        for name, df in (("train", train), ("valid", valid)):
            if not {"query", "title", "label"} <= set(df.columns) or df.empty:
                raise DataError(f"GBDTClassifier.fit: the {name} table needs rows with query, title and label")
        tq, tt = text_pairs(train)
        vq, vt = text_pairs(valid)
        self.features_ = PairFeatures().fit(tt)
        y, vy = train["label"].to_numpy(), valid["label"].to_numpy()
        weight = np.where(y == 1, self.defect_weight, 1.0)
        dtrain = lgb.Dataset(self.features_.transform(tq, tt), y, weight=weight, feature_name=list(FEATURES), free_raw_data=False)
        dvalid = lgb.Dataset(self.features_.transform(vq, vt), vy, weight=np.where(vy == 1, self.defect_weight, 1.0), reference=dtrain)
        callbacks = [lgb.early_stopping(self.early_stopping, verbose=False)] if self.early_stopping > 0 else []
        self.booster_ = lgb.train(self._lgb_params(), dtrain, num_boost_round=self.num_rounds, valid_sets=[dvalid],
                                  valid_names=["valid"], callbacks=callbacks)
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        self.__dict__.pop("calibrator_", None)  # a refit: the raw scores of the new booster
        self.calibrate(valid, self.predict_proba(vq, vt))
        return self

    def predict_proba(self, queries: Sequence[str] | pd.DataFrame, titles: Sequence[str] | None = None) -> np.ndarray:
        """Defect probability per pair (a table with query/title, or two sequences)."""
        check_fitted(self, "booster_")
        q, t = text_pairs(queries, titles)
        if not q:
            return np.zeros(0)
        return self.calibrated(self.booster_.predict(self.features_.transform(q, t), num_iteration=self.best_iteration_))

    # -------------------------------------------------------------- inspection
    def num_parameters(self) -> int:
        """Tree nodes (split thresholds + leaf values) of the trees used for prediction."""
        check_fitted(self, "booster_")
        trees = self.booster_.dump_model(num_iteration=self.best_iteration_)["tree_info"]
        return int(sum(2 * t["num_leaves"] - 1 for t in trees))

    def feature_importance(self, kind: str = "gain") -> dict[str, float]:
        """{feature: importance} sorted high to low; ``kind`` is "gain" or "split"."""
        check_fitted(self, "booster_")
        values = self.booster_.feature_importance(importance_type=kind, iteration=self.best_iteration_)
        return dict(sorted(zip(FEATURES, map(float, values)), key=lambda kv: -kv[1]))

    def plot_importance(self, path: str | Path, kind: str = "gain") -> None:
        """A horizontal bar chart of the features' importance (share of total ``kind``)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..reporting import _save_figure

        imp = self.feature_importance(kind)
        total = sum(imp.values()) or 1.0
        names, shares = list(imp)[::-1], [v / total for v in list(imp.values())[::-1]]
        fig, ax = plt.subplots(figsize=(6, 0.25 * len(names) + 1))
        ax.barh(names, shares, color="tab:green")
        ax.set_xlabel(f"share of total {kind}")
        ax.set_title("GBDT feature importance")
        ax.grid(axis="x", alpha=0.3)
        _save_figure(fig, path)
        plt.close(fig)

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """config.json + booster.txt (LightGBM text) + features.json / features.safetensors."""
        check_fitted(self, "booster_")
        import lightgbm as lgb

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{BOOSTER_FILE}.tmp"
        self.booster_.save_model(str(tmp), num_iteration=self.best_iteration_)
        tmp.replace(out / BOOSTER_FILE)
        self.features_.save(out)
        self.calibrator_.save(out)
        atomic_write_json(out / CONFIG_FILE, stamp("gbdt", lightgbm_version=lgb.__version__, params=self.get_params(),
                                                    **self.decision_fields(), best_iteration=self.best_iteration_, features=list(FEATURES),
                                                    files={"booster": BOOSTER_FILE, "features": "features.json"}))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "GBDTClassifier":
        import lightgbm as lgb

        d = Path(directory)
        config = read_config(d, "gbdt")
        clf = cls(**config["params"])
        clf.booster_ = lgb.Booster(model_file=str(d / BOOSTER_FILE))
        clf.features_ = PairFeatures.load(d)
        clf.best_iteration_ = int(clf.booster_.current_iteration())
        clf.load_decision(d, config)
        return clf
