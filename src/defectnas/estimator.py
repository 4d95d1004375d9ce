"""``DefectClassifier``: the scikit-learn-style face of the library.

Why: users want three lines — ``fit`` on a labelled table, ``predict_proba`` on pairs,
``save``/``load`` a directory — without learning about tokenizers, encoders or thresholds.
``__init__`` only stores options (flat names of :class:`ModelConfig` and :class:`TrainConfig`);
``fit`` validates, trains and sets the learned state (names ending in ``_``). A model directory
holds ``config.json``, ``model.safetensors`` and ``tokenizer.json``; loading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from . import __version__
from .config import ModelConfig, TrainConfig, split_options, to_dict
from .data import build_triplets, load_pairs, normalize_text, split_by_query, text_pairs
from .data.tokenizer import TextTokenizer
from .errors import DataError, NotFittedError
from .model import DefectNet
from .model.bert import read_bert_config
from .model.pretrained import load_word_embeddings, resolve_model_path
from .storage import atomic_write_json, load_tensors, save_tensors
from .training import Pairs, Triplets, defect_metrics, predict_logits, train

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
LABELS = {"0": "relevant", "1": "defect"}


class DefectClassifier:
    """Two-tower transformer that scores how likely a product is a defect for a query.

    Options are the fields of :class:`~defectnas.config.ModelConfig` and
    :class:`~defectnas.config.TrainConfig`, e.g. ``DefectClassifier(variant="dl-jl", epochs=5)``.
    """

    def __init__(self, **options: Any) -> None:
        split_options(options)  # fail on a typo now, not after an hour of training
        self.options = dict(options)

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        data: pd.DataFrame | str | Path,
        valid: pd.DataFrame | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        quiet: bool = True,
        log: Callable[[str], None] | None = None,
        teacher: Any = None,
    ) -> "DefectClassifier":
        """Train on ``data`` (a table with query/title/label, any recognised dataset, or a path).

        Without ``valid``, ``valid_frac`` of the training queries are held out (grouped by
        query) for early stopping and the F1-best threshold. ``teacher`` (any fitted model with
        ``predict_proba(queries, titles)``, or the ``teacher`` option naming a saved model
        directory) turns on knowledge distillation from its probabilities.
        """
        model_opts, train_opts = split_options(self.options)
        tcfg = TrainConfig(**train_opts)
        df = _as_pairs(data)
        if valid is None:
            parts = split_by_query(df, valid_frac=tcfg.valid_frac, test_frac=0.0, seed=tcfg.seed)
            df, valid = parts["train"], parts["valid"]
        else:
            valid = _as_pairs(valid)
        if tcfg.num_threads > 0:
            torch.set_num_threads(tcfg.num_threads)
        torch.manual_seed(tcfg.seed)

        mcfg = ModelConfig(**model_opts)
        if mcfg.embedding_init == "trained":
            tokenizer = TextTokenizer.train(pd.concat([df["query"], df["title"]]).unique().tolist(), vocab_size=tcfg.vocab_size)
            embeddings = None
        else:
            source = resolve_model_path(mcfg.pretrained_model)
            tokenizer = TextTokenizer.from_file(source / "tokenizer.json")
            embeddings = load_word_embeddings(source)
            mcfg.embedding_dim = embeddings.shape[1]
            if mcfg.backbone_layers or mcfg.query_backbone_layers:
                mcfg.backbone = {**read_bert_config(source), "cls_token_id": tokenizer.token_id("[CLS]"), "sep_token_id": tokenizer.token_id("[SEP]")}
        mcfg.vocab_size = tokenizer.vocab_size
        model = DefectNet(mcfg)
        if embeddings is not None:
            model.set_word_embeddings(embeddings)
        if model.backbone is not None:
            model.load_backbone(load_tensors(source / "model.safetensors")[0])

        triplets = None
        if tcfg.variant != "dl-gs":
            trip_df = build_triplets(df, seed=tcfg.seed)
            if trip_df.empty:
                raise DataError(f"variant {tcfg.variant} needs queries with both a relevant and a defect product; the training data has none (use variant dl-gs)")
            triplets = Triplets(
                tokenizer.encode(trip_df["query"].tolist(), mcfg.query_max_len),
                tokenizer.encode(trip_df["positive"].tolist(), mcfg.title_max_len),
                tokenizer.encode(trip_df["negative"].tolist(), mcfg.title_max_len),
            )
        self.tokenizer_, self.model_config_, self.train_config_ = tokenizer, mcfg, tcfg
        train_pairs = self._encode(df)
        if teacher is None and tcfg.teacher:
            from .baselines import load_model

            teacher = load_model(tcfg.teacher)
        if teacher is not None:
            if log:
                log(f"scoring {len(df)} training pairs with the teacher")
            train_pairs.soft = np.asarray(teacher.predict_proba(df["query"].tolist(), df["title"].tolist()), dtype=np.float32)
        result = train(model, tcfg, train_pairs, self._encode(valid), triplets, checkpoint_dir, resume, quiet, log)
        self.model_ = model.eval()
        self.threshold_ = result.threshold
        self.history_ = result.history
        self.valid_f1_ = result.best_f1
        self.valid_ap_ = result.best_ap
        return self

    # --------------------------------------------------------------- prediction
    def predict_proba(self, queries: Sequence[str] | pd.DataFrame, titles: Sequence[str] | None = None, batch_size: int = 1024) -> np.ndarray:
        """Defect probability per (query, title) pair; pass two sequences or one table."""
        self._check_fitted()
        q, t = text_pairs(queries, titles)
        pairs = pd.DataFrame({"query": q, "title": t})
        enc = self._encode(pairs, labels=False)
        logits = predict_logits(self.model_, enc.query, enc.title, batch_size, self.train_config_.device)
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def predict(self, queries, titles=None) -> np.ndarray:
        """1 (defect) where the probability reaches the validation-chosen threshold."""
        return (self.predict_proba(queries, titles) >= self.threshold_).astype(np.int64)

    def evaluate(self, data: pd.DataFrame | str | Path) -> dict[str, float | int]:
        """The contract's metrics on labelled data, at the saved threshold."""
        df = _as_pairs(data)
        return defect_metrics(df["label"].to_numpy(), self.predict_proba(df), self.threshold_)

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write config.json, model.safetensors and tokenizer.json into ``directory``."""
        self._check_fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_tensors(out / WEIGHTS_FILE, self.model_.state_dict(), {"format_version": FORMAT_VERSION})
        self.tokenizer_.save(out)
        atomic_write_json(out / CONFIG_FILE, {
            "format_version": FORMAT_VERSION,
            "library": "defectnas",
            "library_version": __version__,
            "torch_version": torch.__version__,
            "model_type": "two-tower",
            "model": to_dict(self.model_config_),
            "train": to_dict(self.train_config_),
            "threshold": self.threshold_,
            "valid_f1": self.valid_f1_,
            "valid_ap": getattr(self, "valid_ap_", None),
            "labels": LABELS,
            "tokenizer": {"file": "tokenizer.json", "query_max_len": self.model_config_.query_max_len, "title_max_len": self.model_config_.title_max_len},
            "history": self.history_,
        })
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "DefectClassifier":
        """Rebuild a saved classifier: config → model → weights (safetensors, no pickle)."""
        d = Path(directory)
        try:
            config = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{d}: not a model directory (no {CONFIG_FILE})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{d / CONFIG_FILE}: not valid JSON ({e.msg})") from None
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise DataError(f"{d}: saved by a newer defectnas (format {config['format_version']}); upgrade defectnas")
        mcfg = ModelConfig.from_dict(config["model"])
        tcfg = TrainConfig.from_dict({**config["train"], "device": device})
        clf = cls(**{**to_dict(mcfg), **to_dict(tcfg)})
        model = DefectNet(mcfg)
        tensors, _ = load_tensors(d / WEIGHTS_FILE)
        model.load_state_dict(tensors)
        clf.model_ = model.to(device).eval()
        clf.tokenizer_ = TextTokenizer.load(d)
        clf.model_config_, clf.train_config_ = mcfg, tcfg
        clf.threshold_ = float(config["threshold"])
        clf.valid_f1_ = config.get("valid_f1")
        clf.valid_ap_ = config.get("valid_ap")
        clf.history_ = config.get("history", [])
        return clf

    # ------------------------------------------------------------------ helpers
    def num_parameters(self) -> int:
        self._check_fitted()
        return self.model_.num_parameters()

    def _encode(self, df: pd.DataFrame, labels: bool = True) -> Pairs:
        cfg = self.model_config_
        label = df["label"].to_numpy(dtype=np.int64) if labels else np.zeros(len(df), dtype=np.int64)
        return Pairs(
            self.tokenizer_.encode(df["query"].tolist(), cfg.query_max_len),
            self.tokenizer_.encode(df["title"].tolist(), cfg.title_max_len),
            label,
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this DefectClassifier is not fitted yet: call fit() or DefectClassifier.load(dir)")


def _as_pairs(data: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A normalised (query, title, label) table from a path, a dataset table or a ready table."""
    if isinstance(data, pd.DataFrame) and {"query", "title", "label"} <= set(data.columns):
        out = data.copy()
        out["query"] = out["query"].astype(str).map(normalize_text)
        out["title"] = out["title"].astype(str).map(normalize_text)
        out["label"] = out["label"].astype(np.int64)
        return out.reset_index(drop=True)
    return load_pairs(data)
