"""``DefectClassifier``: the scikit-learn-style face of the library.

Why: users want three lines — ``fit`` on a labelled table, ``predict_proba`` on pairs,
``save``/``load`` a directory — without learning about tokenizers, encoders or thresholds.
``__init__`` only stores options (flat names of :class:`ModelConfig` and :class:`TrainConfig`);
``fit`` validates, trains, calibrates the probabilities on the validation split and picks the
threshold on the calibrated ones, and sets the learned state (names ending in ``_``). A model
directory holds ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
``calibration.json``; loading never unpickles.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from . import __version__
from .calibration import CALIBRATION_FILE, THRESHOLD_RULE, Calibrator, fit_calibrator
from .config import SCRATCH_EPOCHS, ModelConfig, TrainConfig, check_types, split_options, to_dict
from .data import build_triplets, load_pairs, split_by_query, text_pairs
from .data.text import check_pair_arguments
from .data.integrity import coverage_report, coverage_warning, duplicate_report, html_entity_report
from .data._common import counted, more, show
from .data.load import INVALID_ROWS, PairsRead, missing_class, skipped_line
from .data.tokenizer import TextTokenizer
from .errors import DataError, DataWarning, NotFittedError
from .model import DefectNet
from .model.bert import read_bert_config
from .model.pretrained import load_word_embeddings, resolve_model_path
from .storage import atomic_write_json, check_model_directory, load_tensors, not_a_model_directory, save_tensors
from .batch import pair_logits
from .training import Pairs, Triplets, best_threshold, defect_metrics, predict_logits, train

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
LABELS = {"0": "relevant", "1": "defect"}


class DefectClassifier:
    """Two-tower transformer that scores how likely a product is a defect for a query.

    Options are the fields of :class:`~defectnas.config.ModelConfig` and
    :class:`~defectnas.config.TrainConfig`, e.g. ``DefectClassifier(variant="dl-jl", epochs=5)``.
    """

    def __init__(self, **options: Any) -> None:
        model, train = split_options(options)  # fail on a typo or a wrong type now, not after an hour of training
        check_types(ModelConfig, model), check_types(TrainConfig, train)
        self.options = dict(options)

    # scikit-learn's estimator protocol (clone, GridSearchCV, pipelines). BaseEstimator is not
    # inherited: it reads the parameter names off __init__'s signature, which here is **options.
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The options given to the constructor or ``set_params`` (the others keep their defaults);
        ``deep`` is accepted for scikit-learn, with no nested estimators to descend into. The values
        are the objects given, as ``sklearn.base.clone`` requires."""
        return dict(self.options)

    def set_params(self, **params: Any) -> "DefectClassifier":
        """Change options (checked as the constructor checks them); a fitted model stays as it
        was fitted until ``fit`` runs again. Returns ``self``."""
        options = {**self.options, **params}
        model, train = split_options(options)
        check_types(ModelConfig, model), check_types(TrainConfig, train)
        self.options = options
        return self

    def configs(self, *, check_teacher: bool = True) -> tuple[ModelConfig, TrainConfig]:
        """The options as the configurations ``fit`` starts from, every value checked: ConfigError
        (or DataError for a ``teacher`` that is no model directory) in one line, before any data is
        read — ``train`` calls it first. Fit-time fields (vocabulary size, pre-trained shapes) are
        still at their defaults. Without ``epochs`` given, a model with no pre-trained contextual
        layers in either tower (``--preset seed``, ``embedding_init="trained"``) trains
        :data:`~defectnas.config.SCRATCH_EPOCHS` epochs, not ``TrainConfig``'s one."""
        model_opts, train_opts = split_options(self.options)
        mcfg, tcfg = ModelConfig(**model_opts), TrainConfig(**train_opts)
        if "epochs" not in train_opts and mcfg.backbone_layers == 0 and mcfg.query_backbone_layers == 0:
            tcfg.epochs = SCRATCH_EPOCHS  # no pre-trained contextual layers: the towers' cells learn from scratch
        if check_teacher and tcfg.teacher:
            check_model_directory(tcfg.teacher)
        return mcfg, tcfg

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
        invalid_rows: str = "skip",
    ) -> "DefectClassifier":
        """Train on ``data`` (a table with query/title/label, any recognised dataset, or a path).

        Without ``valid``, ``valid_frac`` of the training queries are held out (grouped by
        query) for early stopping and the F1-best threshold. ``teacher`` (any fitted model with
        ``predict_proba(queries, titles)``, or the ``teacher`` option naming a saved model
        directory) turns on knowledge distillation from its probabilities.

        Pairs whose query or title the tokenizer turns into nothing, or into unknown pieces
        only, carry no signal: ``invalid_rows="skip"`` leaves them out (one DataWarning line),
        ``"error"`` raises. Repeated and conflicting pairs are all kept (one log line counts
        them): a pair judged twice counts twice, and a pair judged both ways teaches its share
        of defect judgements. The vocabulary's unknown-piece share on the training text is
        logged, and a poorly covered script is one DataWarning line.
        A validation split without a defect (or without a relevant pair) is refused
        (DataError): early stopping, calibration and the threshold would have nothing to go on.
        """
        if invalid_rows not in INVALID_ROWS:
            raise DataError(f"invalid_rows must be one of {', '.join(INVALID_ROWS)}, got {invalid_rows!r}")
        mcfg, tcfg = self.configs(check_teacher=teacher is None)  # (a teacher given here is used, not the option's directory)
        df = _as_pairs(data)
        if valid is None:
            parts = split_by_query(df, valid_frac=tcfg.valid_frac, test_frac=0.0, seed=tcfg.seed)
            df, valid = parts["train"], parts["valid"]
        else:
            valid = _as_pairs(valid)
        if tcfg.num_threads > 0:
            torch.set_num_threads(tcfg.num_threads)
        torch.manual_seed(tcfg.seed)

        if mcfg.embedding_init == "trained":
            tokenizer = TextTokenizer.train(pd.concat([df["query"], df["title"]]).unique().tolist(), vocab_size=tcfg.vocab_size)
            embeddings = None
        else:
            source = resolve_model_path(mcfg.pretrained_model)
            tokenizer = TextTokenizer.from_pretrained(source / "tokenizer.json")  # never strips marks that change a word
            embeddings = load_word_embeddings(source)
            mcfg.embedding_dim = embeddings.shape[1]
            if mcfg.backbone_layers or mcfg.query_backbone_layers:
                mcfg.backbone = {**read_bert_config(source), "cls_token_id": tokenizer.token_id("[CLS]"), "sep_token_id": tokenizer.token_id("[SEP]")}
        mcfg.vocab_size = tokenizer.vocab_size
        self.tokenizer_ = tokenizer
        df = self._drop_unscorable(df, invalid_rows, "training data")
        valid = self._drop_unscorable(valid, invalid_rows, "validation data")
        self.data_report_ = {"duplicates": duplicate_report(df), "html_entities": html_entity_report(df),
                             "coverage": coverage_report(tokenizer, pd.unique(pd.concat([df["query"], df["title"]])).tolist(),
                                                         "pre-trained vocabulary" if mcfg.embedding_init != "trained" else "trained vocabulary")}
        if log:
            dup, cov = self.data_report_["duplicates"], self.data_report_["coverage"]
            html = self.data_report_["html_entities"]
            log(f"training data: {counted(dup['duplicate_rows'], 'row')} {'repeats' if dup['duplicate_rows'] == 1 else 'repeat'} a pair, "
                f"{counted(dup['conflicting_pairs'], 'pair')} labelled both ways "
                f"(all kept); {cov['unknown_share']:.2%} of word pieces unknown to the {cov['vocabulary']}"
                + (f"; {html['texts']} distinct texts hold HTML character references such as {html['examples'][0]} (kept as written)"
                   if html["texts"] else ""))
        warning = coverage_warning(self.data_report_["coverage"])
        if warning:
            warnings.warn(f"training data: {warning}", DataWarning, stacklevel=2)
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
        _check_validation_classes(valid)
        self.tokenizer_, self.model_config_, self.train_config_ = tokenizer, mcfg, tcfg
        train_pairs = self._encode(df)
        if teacher is None and tcfg.teacher:
            from .baselines import load_model

            teacher = load_model(tcfg.teacher)
        if teacher is not None:
            if log:
                log(f"scoring {len(df)} training pairs with the teacher")
            train_pairs.soft = np.asarray(teacher.predict_proba(df["query"].tolist(), df["title"].tolist()), dtype=np.float32)
        valid_pairs = self._encode(valid)
        result = train(model, tcfg, train_pairs, valid_pairs, triplets, checkpoint_dir, resume, quiet, log)
        self.model_ = model.eval()
        self.history_ = result.history
        self.valid_ap_ = result.best_ap  # of the raw scores: the model selection's (and the search's) measure
        # Calibrate on the validation split, then choose the threshold on the calibrated probabilities.
        logits = result.valid_logits  # the best epoch's (the weights kept); a resumed finished run scores again
        if logits is None:
            logits = predict_logits(self.model_, valid_pairs.query, valid_pairs.title, device=tcfg.device)
        self.calibrator_ = fit_calibrator(valid_pairs.label, logits, valid["query"].to_numpy(), tcfg.calibration, tcfg.seed)
        self.threshold_, self.valid_f1_ = best_threshold(valid_pairs.label, self.calibrator_.transform_logits(logits))
        self.threshold_rule_ = THRESHOLD_RULE
        self.operating_point_, self.group_thresholds_ = None, None
        if log:
            log(f"calibration: {self.calibrator_.method} ({json.dumps(self.calibrator_.report)}); threshold {self.threshold_:.4f}, {THRESHOLD_RULE}")
        return self

    def distill_query(self, data: pd.DataFrame | str | Path, valid: pd.DataFrame | str | Path, *, layers: int = 2, epochs: int = 4,
                      text_windows: int = 0, init: str = "bottom+top", lr: float = 5e-4, logit_weight: float = 0.0,
                      seed: int | None = None, checkpoint_dir: str | Path | None = None,
                      resume: bool = False, quiet: bool = True, log: Callable[[str], None] | None = None,
                      invalid_rows: str = "skip") -> "DefectClassifier":
        """A new classifier whose query tower has ``layers`` pre-trained layers, distilled from this
        one's (:mod:`defectnas.training.query_distillation`): faster to serve, with this model's
        title tower and head, so this model's product caches serve it too.

        ``data``: the training pairs (their queries, and a prefix and ``text_windows`` word runs of
        each title, are the texts distilled on: :func:`~defectnas.training.query_distillation.query_like_texts`;
        labels are not used); ``init``: which of this model's query layers the student's start as
        (:func:`~defectnas.training.query_distillation.student_layer_sources`); ``valid``: labelled pairs of other queries, on which the best epoch is
        chosen (AP), the probabilities calibrated and the threshold picked, as ``fit`` does.
        Raises ConfigError for a model without pre-trained query layers or ``layers`` not fewer
        than its own; DataError for an empty split."""
        from .training.query_distillation import (QueryDistillationConfig, distill_query_tower, query_like_texts, state_digest,
                                                  student_net)

        self._check_fitted()
        if invalid_rows not in INVALID_ROWS:
            raise DataError(f"invalid_rows must be one of {', '.join(INVALID_ROWS)}, got {invalid_rows!r}")
        tcfg = self.train_config_
        dcfg = QueryDistillationConfig(layers=layers, epochs=epochs, text_windows=text_windows, init=init, lr=lr,
                                       logit_weight=logit_weight, seed=tcfg.seed if seed is None else seed, device=tcfg.device)
        student = copy.copy(self)
        student.model_ = student_net(self.model_, layers, dcfg.init)  # ConfigError before any data is read
        df = self._drop_unscorable(_as_pairs(data), invalid_rows, "training data")
        valid = self._drop_unscorable(_as_pairs(valid), invalid_rows, "validation data")
        for name, part in (("training", df), ("validation", valid)):
            if part.empty:
                raise DataError(f"query distillation needs {name} pairs; the {name} split is empty")
        torch.manual_seed(dcfg.seed)  # (torch's thread count is the caller's: distill-query --threads)
        mcfg = self.model_config_
        texts = self.tokenizer_.encode(query_like_texts(df["query"].tolist(), df["title"].tolist(), dcfg.seed, dcfg.text_windows),
                                     mcfg.query_max_len)
        if log:
            log(f"distilling a {layers}-layer query tower from the {mcfg.query_backbone_layers}-layer one on {len(texts)} query-like texts "
                f"and {len(df)} training pairs")
        valid_pairs = self._encode(valid)
        dcfg = dataclasses.replace(dcfg, teacher_digest=state_digest(self.model_))  # which teacher, in the student's history too
        result = distill_query_tower(self.model_, student.model_, texts, self._encode(df, labels=False), valid_pairs, dcfg,
                                     checkpoint_dir, resume, quiet, log)
        logits = result.valid_logits
        if logits is None:  # a resumed finished run: score again
            logits = predict_logits(student.model_, valid_pairs.query, valid_pairs.title, device=tcfg.device)
        student.options = {**self.options, "query_backbone_layers": layers, "query_backbone_trainable": layers}
        student.model_config_ = student.model_.cfg
        student.valid_ap_ = result.best_ap
        student.history_ = [{"phase": "distil-query", "from_query_layers": mcfg.query_backbone_layers, "config": to_dict(dcfg),
                             "best_epoch": result.best_epoch, "resumed_after_epoch": result.resumed_after_epoch}, *result.history]
        student.calibrator_ = fit_calibrator(valid_pairs.label, logits, valid["query"].to_numpy(), tcfg.calibration, tcfg.seed)
        student.threshold_, student.valid_f1_ = best_threshold(valid_pairs.label, student.calibrator_.transform_logits(logits))
        student.threshold_rule_ = THRESHOLD_RULE
        student.operating_point_, student.group_thresholds_ = None, None
        return student

    # ---------------------------------------------------------------- screening
    def text_problems(self, queries: Sequence[str] | pd.DataFrame, titles: Sequence[str] | None = None) -> list[str]:
        """Per pair: "" when the model can score it, else why not, judged on what the model sees
        (normalised, then tokenised): "query: no word pieces", "title: only unknown word pieces"."""
        tok = self.tokenizer_ if hasattr(self, "tokenizer_") else None
        if tok is None:
            raise NotFittedError("this DefectClassifier is not fitted yet: call fit() or DefectClassifier.load(dir)")
        return self._problems(*text_pairs(queries, titles, "text_problems"))

    def _problems(self, queries: list[str], titles: list[str]) -> list[str]:
        """:meth:`text_problems` of normalised texts, each distinct text tokenised once (a table of
        20 queries × 100 titles: 120 texts, not 4,000)."""
        texts = list(dict.fromkeys([*queries, *titles]))
        said = dict(zip(texts, self.tokenizer_.problems(texts)))
        return [f"query: {said[a]}" if said[a] else f"title: {said[b]}" if said[b] else "" for a, b in zip(queries, titles)]

    def screen(self, read: PairsRead, invalid_rows: str = "skip") -> PairsRead:
        """``read`` without the pairs :meth:`text_problems` finds, their reasons recorded; with
        ``invalid_rows="error"`` a DataError naming the first such row instead."""
        problems = self.text_problems(read.pairs) if len(read.pairs) else []
        bad = np.flatnonzero([bool(p) for p in problems])
        if not len(bad):
            return read
        reasons = pd.Series("", index=read.reasons.index, dtype=object)
        reasons.iloc[read.positions[bad]] = [problems[i] for i in bad]
        if invalid_rows == "error":
            first = read.positions[bad[0]]
            raise read.src.error(f"{read.src.row(first)}: {problems[bad[0]]} for this model{more(len(bad))} "
                                 "(--invalid-rows skip leaves such rows out)")
        warnings.warn(read.src.error(skipped_line(reasons, read.src, "the model cannot score")).args[0], DataWarning, stacklevel=2)
        merged = read.reasons.copy()
        merged[reasons != ""] = reasons[reasons != ""]
        keep = np.ones(len(read.pairs), dtype=bool)
        keep[bad] = False
        return PairsRead(read.pairs.loc[keep].reset_index(drop=True), read.source, read.positions[keep], merged, read.src, read.notes)

    def _drop_unscorable(self, df: pd.DataFrame, invalid_rows: str, what: str) -> pd.DataFrame:
        problems = self.text_problems(df)
        bad = np.array([bool(p) for p in problems], dtype=bool)
        if not bad.any():
            return df
        first = int(np.argmax(bad))
        shown = f"query {df['query'].iloc[first]!r}, title {df['title'].iloc[first]!r}: {problems[first]}"
        if invalid_rows == "error":
            raise DataError(f"{what}: the pair {shown} (and {int(bad.sum()) - 1} more pairs); invalid_rows='skip' leaves such pairs out")
        warnings.warn(f"{what}: {counted(int(bad.sum()), 'pair')} left out that the tokenizer turns into nothing or unknown pieces only "
                      f"(first: {shown})", DataWarning, stacklevel=3)
        return df.loc[~bad].reset_index(drop=True)

    # --------------------------------------------------------------- prediction
    def predict_proba(self, queries: Sequence[str] | pd.DataFrame, titles: Sequence[str] | None = None, batch_size: int = 1024, *,
                      cache=None, product_ids: Sequence[str] | None = None) -> np.ndarray:
        """Calibrated defect probability (N,) float64 per (query, title) pair; pass two sequences or
        one table (``query``, ``title``). Each distinct query and title is encoded once per call
        (:func:`defectnas.batch.pair_logits`), so repeated texts cost only the score head.

        ``cache``: an opened :class:`~defectnas.serving.cache.ProductCache` built by this model (the
        caller checks that, e.g. with ``ProductCache.check_model``); a pair whose product id
        (``product_ids``, or the table's ``product_id`` [and ``product_locale``] columns) the cache
        holds under the same normalised title takes the cached encoding (not re-encoded; a float16
        cache moves probabilities by ~1e-3 at most), the others are encoded. DataError when the
        cache's dimensions are not this model's or no product ids are given."""
        self._check_fitted()
        q, t = text_pairs(queries, titles, "predict_proba")
        unscorable = self._unscorable(q, t, "predict_proba")
        pairs = pd.DataFrame({"query": q, "title": t})
        rows = None
        if cache is not None:
            rows = self._cache_rows(cache, queries, t, product_ids)
        out = np.full(len(q), np.nan)
        if unscorable.any():  # NaN for those, as the command line keeps such rows unscored
            pairs, rows = pairs.loc[~unscorable].reset_index(drop=True), None if rows is None else rows[~unscorable]
        if len(pairs):
            enc = self._encode(pairs, labels=False)
            logits = pair_logits(self.model_, enc.query, enc.title, batch_size, self.train_config_.device,
                                 cached=cache.arrays if cache is not None else None, cache_rows=rows)
            out[~unscorable] = self.calibrator_.transform_logits(logits)
        return out

    def _unscorable(self, queries: list[str], titles: list[str], what: str) -> np.ndarray:
        """(N,) bool: the pairs with a text the model sees nothing of (empty, missing or invisible
        characters only: :data:`~defectnas.data.tokenizer.NO_PIECES`), said in one DataWarning line
        naming the first. A text of unknown word pieces only is still scored, as before (the model
        reads its unknown-token embeddings), and said in a DataWarning of its own; the command
        line's screening (:meth:`screen`) sets both kinds aside."""
        from .data.tokenizer import NO_PIECES

        problems = self._problems(queries, titles)
        bad = np.array([p.endswith(NO_PIECES) for p in problems], dtype=bool)
        unknown = np.array([bool(p) for p in problems], dtype=bool) & ~bad
        if bad.any():
            first = int(np.argmax(bad))
            warnings.warn(f"{what}: {counted(int(bad.sum()), 'pair')} the model cannot score (pair {first}: {problems[first]}): "
                          "probability NaN; text_problems() names each", DataWarning, stacklevel=3)
        if unknown.any():
            first = int(np.argmax(unknown))
            warnings.warn(f"{what}: {counted(int(unknown.sum()), 'pair')} scored from unknown word pieces only (pair {first}: "
                          f"{problems[first]}): the score says little; text_problems() names each", DataWarning, stacklevel=3)
        return bad

    def _cache_rows(self, cache, table, titles: list[str], product_ids) -> np.ndarray:
        """Each pair's cache row or -1 (see predict_proba)."""
        from .batch import cache_rows

        a = cache.arrays
        if (a.vector.shape[1], None if a.tokens is None else a.tokens.shape[1:]) != (
                int(getattr(self.model_, "vector_dim", self.model_config_.d_model)),
                (self.model_config_.title_max_len, self.model_config_.d_model) if self.model_.needs_title_tokens else None):
            raise DataError(f"{cache.directory}: a cache of a model with other dimensions than this one; build it with this model")
        locales = None
        if product_ids is None:
            if not (isinstance(table, pd.DataFrame) and "product_id" in table.columns):
                raise DataError("predict_proba with a cache needs product ids (product_ids=, or a product_id column)")
            product_ids = table["product_id"].astype(str).tolist()
            if "product_locale" in table.columns:
                locales = table["product_locale"].astype(str).tolist()
        if len(product_ids) != len(titles):
            raise DataError(f"predict_proba needs one product id per pair ({len(product_ids)} ids for {len(titles)} pairs)")
        return cache_rows(cache, [str(i) for i in product_ids], titles, locales)

    def predict(self, queries, titles=None) -> np.ndarray:
        """1 (defect) where the probability reaches the saved threshold (per group when the model
        has per-group thresholds and ``queries`` is a table with that column)."""
        check_pair_arguments(queries, titles, "predict")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # said below, as an error
            probs = self.predict_proba(queries, titles)
        if np.isnan(probs).any():  # 0 would call a pair the model never read relevant
            bad = np.flatnonzero(np.isnan(probs))
            raise DataError(f"predict: {counted(len(bad), 'pair')} the model cannot score (pair {bad[0]}: "
                            f"{self.text_problems(queries, titles)[bad[0]]}): predict_proba gives them NaN; leave them out "
                            "(text_problems() names each) to predict the rest")
        rows = self.row_thresholds(queries) if isinstance(queries, pd.DataFrame) else None
        return (probs >= (self.threshold_ if rows is None else rows)).astype(np.int64)

    def evaluate(self, data: pd.DataFrame | str | Path, return_probabilities: bool = False):
        """The contract's metrics on labelled data at the saved operating point (per-group
        thresholds when the table has their column; then also ``threshold_by``). With
        ``return_probabilities``: ``(metrics, labels, probabilities)``. Pairs without a defect
        give 0 for the undefined precision, recall, F1 and AP, with a DataWarning saying so; so does
        an AP no higher than the defect rate (what a random order scores)."""
        column = (getattr(self, "group_thresholds_", None) or {}).get("column")
        df = self._drop_unscorable(_as_pairs(data, keep=[column] if column else ()), "skip", "evaluate")
        rows = self.row_thresholds(df)
        labels, probs = df["label"].to_numpy(), self.predict_proba(df)
        if len(labels) and not labels.any():
            warnings.warn(f"the evaluated pairs ({len(labels):,}) hold no defect: precision, recall, F1 and AP are undefined "
                          "(reported as 0); evaluate on pairs with defects", DataWarning, stacklevel=2)
        metrics = defect_metrics(labels, probs, self.threshold_, rows)
        if labels.any() and not labels.all() and metrics["average_precision"] <= metrics["defect_rate"]:
            warnings.warn(f"AP {metrics['average_precision']:.3f} on these {len(labels):,} pairs is no better than a random order's "
                          f"(the defect rate, {metrics['defect_rate']:.3f}): the model ranks their defects no better than chance — "
                          "are the labels the other way round (--defect-labels), or is this another kind of data?",
                          DataWarning, stacklevel=2)
        if rows is not None:
            metrics["threshold_by"] = column
        return (metrics, labels, probs) if return_probabilities else metrics

    def row_thresholds(self, table: pd.DataFrame, warn: bool = True) -> np.ndarray | None:
        """One threshold per row from the per-group thresholds, or None (the global threshold
        applies: no per-group thresholds, or the table lacks their column — said once, as a warning)."""
        groups = getattr(self, "group_thresholds_", None)
        if not groups:
            return None
        column = groups["column"]
        if column not in table.columns:
            if warn:
                warnings.warn(f"the model has per-{column} thresholds but the table has no {column!r} column: "
                              f"the global threshold {self.threshold_:.4g} is used", UserWarning, stacklevel=3)
            return None
        from .thresholds import apply_group_thresholds

        return apply_group_thresholds(table[column], groups, self.threshold_)

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write config.json, model.safetensors and tokenizer.json into ``directory``."""
        self._check_fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_tensors(out / WEIGHTS_FILE, self.model_.state_dict(), {"format_version": FORMAT_VERSION})
        self.tokenizer_.save(out)
        self.calibrator_.save(out)
        atomic_write_json(out / CONFIG_FILE, {
            "format_version": FORMAT_VERSION,
            "library": "defectnas",
            "library_version": __version__,
            "torch_version": torch.__version__,
            "model_type": "two-tower",
            "model": to_dict(self.model_config_),
            "train": to_dict(self.train_config_),
            "threshold": self.threshold_,
            "threshold_rule": getattr(self, "threshold_rule_", THRESHOLD_RULE),
            **({"operating_point": self.operating_point_} if getattr(self, "operating_point_", None) else {}),
            **({"group_thresholds": self.group_thresholds_} if getattr(self, "group_thresholds_", None) else {}),
            "calibration": {"file": CALIBRATION_FILE, "method": self.calibrator_.method},
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
        except (FileNotFoundError, NotADirectoryError):  # the second: a file given as the directory
            raise DataError(not_a_model_directory(d)) from None
        except json.JSONDecodeError as e:
            raise DataError(f"{d / CONFIG_FILE}: not valid JSON ({e.msg})") from None
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise DataError(f"{d}: saved by a newer defectnas (format {config['format_version']}); upgrade defectnas")
        kind = config.get("defectnas", config).get("model_type", "two-tower")  # a cross-encoder keeps ours under "defectnas"
        if kind != "two-tower":  # a baseline compare saved: named here, loaded by the layer above (baselines imports this one)
            raise DataError(f"{d}: a {kind!r} model, not a two-tower one; load it with defectnas.baselines.load_model(dir)")
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
        clf.threshold_rule_ = config.get("threshold_rule", "f1-best on validation")
        clf.operating_point_ = config.get("operating_point")
        clf.group_thresholds_ = config.get("group_thresholds")
        clf.calibrator_ = Calibrator.load(d)  # identity for a directory saved before calibration
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


def _as_pairs(data: pd.DataFrame | str | Path, keep: Sequence[str] = ()) -> pd.DataFrame:
    """A normalised (query, title, label) table from a path, a dataset table or a ready table
    (with the source's ``keep`` columns, where it has them)."""
    if isinstance(data, pd.DataFrame) and {"query", "title", "label"} <= set(data.columns):
        out = data.copy()
        out["query"], out["title"] = text_pairs(out)  # a missing text is "": left out where the model screens pairs
        out["label"] = _binary_labels(out["label"], data.index)
        return out.loc[out["label"].notna()].astype({"label": np.int64}).reset_index(drop=True)
    return load_pairs(data, keep=keep)


def _binary_labels(label: pd.Series, index: pd.Index) -> pd.Series:
    """A ready table's ``label`` column as 0/1 (float, NaN where missing): DataError naming the
    first row index whose label is neither (pandas' cast error, or scikit-learn's "multiclass",
    came out before); one DataWarning line for the missing ones, which are left out — as the
    command line's ``--invalid-rows skip`` does."""
    numbers = pd.to_numeric(label, errors="coerce")
    bad = label.notna().to_numpy() & ~numbers.isin([0, 1]).to_numpy()
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"<DataFrame>: row index {show(index[first])}: label {show(label.iloc[first])} is not 0 or 1 (1 = defect)"
                        + (f" (and {int(bad.sum()) - 1} more)" if bad.sum() > 1 else ""))
    missing = label.isna().to_numpy()
    if missing.any():
        warnings.warn(f"<DataFrame>: {counted(int(missing.sum()), 'pair')} without a label left out "
                      f"(first: row index {show(index[int(np.argmax(missing))])})", DataWarning, stacklevel=4)
    return numbers.astype("float64").set_axis(label.index)


MIN_VALID_CLASS = 10  # fewer validation pairs of a class than this: fit says its choices rest on a handful


def _check_validation_classes(valid: pd.DataFrame) -> None:
    """The best epoch is chosen by the validation pairs' AP, and the calibration and the F1-best
    threshold are fitted on them. DataError when they hold one class only: all three would be made
    up (AP 0 every epoch, threshold 0.5 on uncalibrated probabilities). One DataWarning line when
    they hold fewer than :data:`MIN_VALID_CLASS` defects (or relevant pairs): a handful makes the
    threshold a guess (a 2-defect split came from a small table at ``valid_frac=0.02``)."""
    missing = missing_class(valid["label"])
    if missing is not None:
        missing = f"no {missing} pair" if len(valid) else "no pairs"
        raise DataError(f"the validation split ({valid['query'].nunique():,} queries, {len(valid):,} pairs) has {missing}: early "
                        "stopping, calibration and the threshold need both classes; split again (train: another --seed or a larger "
                        "--valid-frac) or give validation data with both")
    defects = int(valid["label"].sum())
    fewest, name = min((defects, "defects"), (len(valid) - defects, "relevant pairs"))
    if fewest < MIN_VALID_CLASS:
        warnings.warn(f"the validation split has {fewest} {name} (of {len(valid):,} pairs, {valid['query'].nunique():,} queries): the "
                      f"best epoch, the calibration and the threshold rest on them and will be noisy; a larger --valid-frac (valid_frac=) "
                      f"or validation data with at least {MIN_VALID_CLASS} steadies them", DataWarning, stacklevel=3)
