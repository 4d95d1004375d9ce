"""The training loop: one loop, read top to bottom.

Variants (``TrainConfig.variant``):
- ``dl-gs``: class-weighted cross-entropy only.
- ``dl-jl``: joint loss ``alpha·CE + beta·triplet`` at every step.
- ``transfer``: ``pretrain_epochs`` of triplet-only training of the encoders, then cross-entropy.

With a teacher's probabilities on the training pairs (``Pairs.soft``), every classification step
adds ``distill_weight · distillation_loss`` (knowledge distillation from, e.g., the cross-encoder).

``TrainConfig.epochs`` is 1 by default: on every sample measured, test AP was highest after the
first pass over the training pairs (README, "A seventh"); more epochs are for models trained from
scratch (``--preset seed``) or for users who check on their own data.

After every epoch the model is scored on the validation split, the F1-best threshold is found,
the best weights so far are kept (early stopping on validation F1, or on average precision with
``TrainConfig.selection_metric="ap"``), and a checkpoint is written
atomically, so ``resume=True`` continues a killed run from the last finished epoch — only the same
run: the checkpoint records the options, model configuration and data it was made with, and a
resume with others is refused (:func:`_check_same_run`). With ``TrainConfig.ema_decay`` it is
the moving average of the weights (:mod:`.averaging`) that is validated, kept and returned.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from ..progress import progress

from ..config import TrainConfig, to_dict
from ..model import DefectNet
from ..model.bert import frozen_states_memoised
from ..model.pairs import pair_logits
from ..data.tokenizer import trim_padding
from ..errors import ConfigError, TrainingDivergedError
from ..storage import load_metadata, load_tensors, save_tensors, tensors_digest
from .averaging import WeightAverage
from .losses import distillation_loss, triplet_loss, weighted_bce
from .metrics import average_precision, best_threshold

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class Pairs:
    """Token ids of query–title pairs with 0/1 labels."""

    query: np.ndarray  # (N, Lq) int64
    title: np.ndarray  # (N, Lt) int64
    label: np.ndarray  # (N,) int64
    soft: np.ndarray | None = None  # (N,) float32 teacher probabilities (distillation), or None


@dataclass
class Triplets:
    """Token ids of (query, relevant title, defect title) triplets."""

    query: np.ndarray  # (M, Lq)
    positive: np.ndarray  # (M, Lt)
    negative: np.ndarray  # (M, Lt)


@dataclass
class TrainResult:
    threshold: float = 0.5  # F1-best threshold on validation, of the best epoch
    best_f1: float = -1.0  # validation F1 of the best epoch (the epoch kept: best by TrainConfig.selection_metric)
    best_ap: float = 0.0  # validation average precision of the defect class, at the best epoch (threshold-free)
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)  # one dict per finished epoch
    valid_logits: np.ndarray | None = None  # validation logits of the best epoch (for calibration; not checkpointed)
    resumed_after_epoch: int = 0  # epochs restored from a checkpoint (their history records came with it; not checkpointed)


def predict_logits(model: DefectNet, query: np.ndarray, title: np.ndarray, batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
    """Logits (N,) float32 for row-aligned id arrays, in eval mode (the model's mode is restored),
    each distinct query and title encoded once (:func:`~defectnas.model.pairs.pair_logits`: a
    validation split repeats each query ~7 times)."""
    return pair_logits(model, query, title, batch_size, device)


def train(
    model: DefectNet,
    cfg: TrainConfig,
    train_pairs: Pairs,
    valid_pairs: Pairs,
    triplets: Triplets | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place (ending with its best weights) and return the result."""
    with frozen_states_memoised(model):  # each text passes the frozen pre-trained layers once, not once per epoch
        return _train(model, cfg, train_pairs, valid_pairs, triplets, checkpoint_dir, resume, quiet, log)


def _train(model, cfg, train_pairs, valid_pairs, triplets, checkpoint_dir, resume, quiet, log) -> TrainResult:
    device = torch.device(cfg.device)
    model.to(device)
    needs_triplets = cfg.variant in ("dl-jl", "transfer")
    if needs_triplets and (triplets is None or len(triplets.query) == 0):
        raise ValueError(f"variant {cfg.variant} needs triplets: queries with both a relevant and a defect product")
    pretrain_epochs = cfg.pretrain_epochs if cfg.variant == "transfer" else 0
    total_epochs = pretrain_epochs + cfg.epochs
    optimizer = torch.optim.Adam(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result, best_state, start_epoch, bad_epochs = TrainResult(), None, 0, 0
    rng = np.random.default_rng(cfg.seed)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    defines = run_record(model, train_pairs, valid_pairs) if ckpt_path is not None else None  # what a resume must match
    if resume and ckpt_path is not None and ckpt_path.exists():
        _check_same_run(ckpt_path, cfg, defines, log)
        start_epoch, bad_epochs, best_state, result, rng, stopped_early = _load_checkpoint(ckpt_path, model, optimizer, average)
        if stopped_early:  # early stopping ended it: nothing left to do (more epochs continue otherwise)
            start_epoch = total_epochs
        if log:
            log(f"resumed from {ckpt_path} after epoch {start_epoch}")
    elif resume and ckpt_path is not None and log:
        log(f"note: no checkpoint in {checkpoint_dir} to resume from: starting from scratch")

    def batches(n: int, size: int, lengths: np.ndarray | None = None):
        """Shuffled batches; with ``lengths``, pairs of similar title length share a batch (less padding)."""
        order = rng.permutation(n)
        if lengths is None:
            return [order[i : i + size] for i in range(0, n, size)]
        chunk = size * 32  # sort within chunks of 32 batches, then shuffle the batches
        out = []
        for c in range(0, n, chunk):
            part = order[c : c + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            out += [part[i : i + size] for i in range(0, len(part), size)]
        return [out[i] for i in rng.permutation(len(out))]

    as_tensor = lambda a, idx: torch.from_numpy(trim_padding(a[idx])).to(device)  # noqa: E731
    title_lengths = (train_pairs.title != 0).sum(1)
    triplet_batch = max(1, cfg.batch_size // 4)
    for epoch in range(start_epoch, total_epochs):
        pretraining = epoch < pretrain_epochs
        started, losses = time.time(), []
        model.train()
        if pretraining:  # triplet-only: the encoders learn the query–relevant–defect geometry
            steps = [(None, idx) for idx in batches(len(triplets.query), cfg.batch_size)]
        else:
            pair_batches = batches(len(train_pairs.label), cfg.batch_size, title_lengths)
            trip = batches(len(triplets.query), triplet_batch) if cfg.variant == "dl-jl" else []
            steps = [(idx, trip[i % len(trip)] if trip else None) for i, idx in enumerate(pair_batches)]
        bar = progress(steps, quiet=quiet, desc=f"epoch {epoch + 1}/{total_epochs}" + (" (triplet pre-training)" if pretraining else ""), leave=False)
        for pair_idx, trip_idx in bar:
            loss = torch.zeros((), device=device)
            if pair_idx is not None:
                logits = model(as_tensor(train_pairs.query, pair_idx), as_tensor(train_pairs.title, pair_idx))
                ce = weighted_bce(logits, torch.from_numpy(train_pairs.label[pair_idx]).to(device), cfg.defect_weight)
                loss = loss + (cfg.alpha * ce if cfg.variant == "dl-jl" else ce)
                if train_pairs.soft is not None and cfg.distill_weight > 0:
                    loss = loss + cfg.distill_weight * distillation_loss(logits, torch.from_numpy(train_pairs.soft[pair_idx]).to(device))
            if trip_idx is not None:
                q = model.encode_query(as_tensor(triplets.query, trip_idx)).vector
                pos = model.encode_title(as_tensor(triplets.positive, trip_idx)).vector
                neg = model.encode_title(as_tensor(triplets.negative, trip_idx)).vector
                tl = triplet_loss(q, pos, neg, cfg.margin)
                loss = loss + (tl if pretraining else cfg.beta * tl)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if average is not None:
                average.update()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")

        check_finite_loss(losses, epoch + 1, "training", f"--lr {cfg.lr:g}")
        record = {"epoch": epoch + 1, "phase": "pretrain" if pretraining else "classify", "loss": float(np.mean(losses)), "seconds": round(time.time() - started, 2)}
        if not pretraining:
            with average.swapped_in() if average is not None else nullcontext():  # the average is what is validated and kept
                valid_logits = predict_logits(model, valid_pairs.query, valid_pairs.title, device=device)
                probs = 1 / (1 + np.exp(-valid_logits))
                threshold, f1 = best_threshold(valid_pairs.label, probs)
                ap = average_precision(valid_pairs.label, probs)
                record.update(valid_f1=f1, valid_ap=ap, threshold=threshold)
                if result.best_epoch < 0 or (ap > result.best_ap if cfg.selection_metric == "ap" else f1 > result.best_f1):
                    result.best_f1, result.best_ap, result.best_epoch, result.threshold, bad_epochs = f1, ap, epoch + 1, threshold, 0
                    result.valid_logits = valid_logits
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_epochs += 1
        result.history.append(record)
        stop = not pretraining and bad_epochs >= cfg.patience
        if ckpt_path is not None:  # before the epoch's line: an epoch the log shows is never lost to a kill
            _save_checkpoint(ckpt_path, model, optimizer, cfg, epoch + 1, bad_epochs, best_state, result, rng, stopped_early=stop,
                             run=defines, average=average)
        if log:
            log(json.dumps(record))
        if stop:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def _param_groups(model: DefectNet, cfg: TrainConfig) -> list[dict]:
    """Trainable parameters; fine-tuned pre-trained layers get their own, much smaller learning rate
    (at the new layers' rate they would forget what pre-training taught them)."""
    from ..model.bert import BertLayer

    tuned = {id(p) for m in model.modules() if isinstance(m, BertLayer) for p in m.parameters() if p.requires_grad}
    new = [p for p in model.parameters() if p.requires_grad and id(p) not in tuned]
    groups = [{"params": new}]
    if tuned:
        groups.append({"params": [p for p in model.parameters() if id(p) in tuned], "lr": cfg.backbone_lr})
    return groups


def check_finite_loss(losses: list[float], epoch: int, what: str, learning_rate: str) -> None:
    """TrainingDivergedError (one line) when an epoch's loss is NaN or infinite: every later step
    would train on it and the validation scores become NaN (a traceback from scikit-learn)."""
    if losses and not np.isfinite(losses).all():
        bad = next(v for v in losses if not np.isfinite(v))
        raise TrainingDivergedError(f"{what} diverged in epoch {epoch}: the loss became {bad} (the learning rate, {learning_rate}, "
                                    "is likely too high): try a smaller one")


# TrainConfig fields a resumed run may change: how long it may go on (epochs, patience), where and
# on how many threads it runs, and the calibration, fitted afresh after training. Any other option
# changes what the finished epochs' weights mean (the loss, the learning rate, the seed's split).
RESUMABLE = ("epochs", "patience", "num_threads", "device", "calibration")
RESUME_ADVICE = "rerun without --resume to start again, or into another --out"  # (resume=False, another checkpoint_dir in Python)
DATA_NAMES = {"train": "training pairs", "valid": "validation pairs"}


def run_record(model: DefectNet, train_pairs: Pairs, valid_pairs: Pairs) -> dict:
    """What defines a training run besides its TrainConfig, saved in each checkpoint: the model's
    configuration, and the row count and digest of the token ids and labels it trains and validates
    on. A resume checks them (:func:`_check_same_run`): another --data, --seed or split fraction
    changes the digests, another architecture the configuration. (A teacher's probabilities are
    not digested: they may differ in the last bits between runs; its ``teacher`` option is checked.)"""
    return {"model": to_dict(model.cfg), "data": {"train": _digest(train_pairs.query, train_pairs.title, train_pairs.label),
                                                  "valid": _digest(valid_pairs.query, valid_pairs.title, valid_pairs.label)}}


def _digest(*arrays: np.ndarray) -> dict:
    """Rows and ``sha256:<hex>`` of row-aligned arrays (dtype, shape and bytes of each, in order)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"\0{a.dtype}:{a.shape}\0".encode())
        h.update(a.tobytes())
    return {"rows": int(len(arrays[0])), "digest": "sha256:" + h.hexdigest()}


def _check_same_run(path: Path, cfg: TrainConfig, record: dict, log: Callable[[str], None] | None) -> None:
    """ConfigError, in one line naming what differs, unless the checkpoint at ``path`` was written by
    the same run: the same training options (but :data:`RESUMABLE`), model configuration and data.
    A resume had continued any checkpoint: weights trained on seed 0's training queries went on
    under seed 5's split, whose test queries they had learned, and another architecture ended in
    load_state_dict's traceback. A checkpoint of an earlier defectnas has no record of its model and
    data: its training options are checked, and it resumes with a note saying the rest was not."""
    meta = load_metadata(path)
    saved, now = meta.get("train_config", {}), to_dict(cfg)
    differ = [_then_now(k, saved[k], v) for k, v in now.items() if k in saved and k not in RESUMABLE and saved[k] != v]
    run = meta.get("run")
    if run is not None:
        differ += [_then_now(k, run["model"].get(k), v) for k, v in record["model"].items() if run["model"].get(k) != v]
        for key, name in DATA_NAMES.items():
            then, later = run["data"].get(key), record["data"].get(key)
            if then != later:
                rows = [f"{d['rows']:,}" if d else "none" for d in (then, later)]
                differ.append(f"{name} {rows[0]} (now {rows[1]})" if rows[0] != rows[1] else f"{name} (now {rows[1]} other ones)")
    if differ:
        raise ConfigError(f"{path}: a checkpoint of another run (other data, split or options): its {'; '.join(differ)}; {RESUME_ADVICE}")
    if run is None and log:
        log(f"note: {path} was written by an earlier defectnas, which did not record its data and model options: resuming "
            "with only its training options checked")


def _then_now(name: str, then, now) -> str:
    """``name THEN (now NOW)``, each value as JSON (as a --config file spells it), cut to 40 characters."""
    texts = [json.dumps(v) for v in (then, now)]
    then, now = (t if len(t) <= 40 else t[:37] + "..." for t in texts)
    return f"{name} {then} (now {now})"


def _save_checkpoint(path, model, optimizer, cfg, epoch, bad_epochs, best_state, result, rng, stopped_early, run=None,
                     average: WeightAverage | None = None) -> None:
    """Model, optimizer, best weights, history, RNG and the weights' moving average (with
    ``ema_decay``) in one safetensors file (atomic); with ``run`` (:func:`run_record`), what
    defines the run, which a resume checks.

    Frozen parameters (``requires_grad`` off: pre-trained layers, a distilled student's title
    tower and head) are not stored, only a digest of them: they are what the model is rebuilt
    with on resume, and :func:`_load_checkpoint` refuses a model whose frozen tensors differ.
    For ``train``'s default model this is 22.6 M of its 22.8 M parameters (a checkpoint of
    3.7 MB instead of ~180 MB), for a ``distill-query`` student all but its query tower's (57 MB)."""
    frozen = _frozen_names(model)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items() if k not in frozen}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items() if k not in frozen})
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    if average is not None:
        tensors.update(average.state())
    meta = {
        "epoch": epoch, "bad_epochs": bad_epochs, "stopped_early": stopped_early, "train_config": to_dict(cfg),
        "param_groups": opt["param_groups"], "numpy_rng": rng.bit_generator.state,
        "result": {"threshold": result.threshold, "best_f1": result.best_f1, "best_ap": result.best_ap, "best_epoch": result.best_epoch,
                   "history": result.history},
        "frozen": {"names": sorted(frozen), "digest": _frozen_digest(model, frozen)},
        **({"run": run} if run is not None else {}),
    }
    save_tensors(path, tensors, meta)


def _frozen_names(model) -> set[str]:
    """State-dict names of the parameters that do not train (every alias of a shared one)."""
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _frozen_digest(model, names) -> str:
    """Digest of the frozen tensors, hashed once per training run: kept on the model under a key
    of the names and each tensor's version counter (an in-place change bumps it), so a later
    epoch's checkpoint reuses it (hashing the 22.6 M frozen parameters costs ~0.3 s)."""
    state = model.state_dict()
    key = (tuple(sorted(names)), tuple(state[k]._version for k in sorted(names)))
    cached = getattr(model, "_frozen_digest_memo", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = tensors_digest({k: state[k] for k in names})
    model._frozen_digest_memo = (key, digest)
    return digest


def _load_checkpoint(path, model, optimizer, average: WeightAverage | None = None):
    tensors, meta = load_tensors(path)
    frozen = set(meta.get("frozen", {}).get("names", []))  # none in a checkpoint written before frozen tensors were left out
    if frozen:
        if frozen != _frozen_names(model) or meta["frozen"]["digest"] != _frozen_digest(model, frozen):
            raise ConfigError(f"{path}: a checkpoint of a model with other frozen (pre-trained) weights than this one; {RESUME_ADVICE}")
    state = model.state_dict()
    try:  # a checkpoint without a run record (an earlier defectnas) may hold another architecture
        model.load_state_dict({**{k: state[k] for k in frozen}, **{k[6:]: v for k, v in tensors.items() if k.startswith("model.")}})
    except RuntimeError:
        raise ConfigError(f"{path}: a checkpoint of a model of another architecture (its tensors' names or shapes differ); "
                          f"{RESUME_ADVICE}") from None
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    if best is not None:
        best.update({k: state[k] for k in frozen})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if average is not None and not average.load(tensors):
        raise ConfigError(f"{path}: a checkpoint without the weights' moving average (ema_decay) this run needs; {RESUME_ADVICE}")
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["numpy_rng"]
    r = meta["result"]
    result = TrainResult(threshold=r["threshold"], best_f1=r["best_f1"], best_ap=r.get("best_ap", 0.0), best_epoch=r["best_epoch"],
                         history=r["history"])
    return meta["epoch"], meta["bad_epochs"], best, result, rng, meta["stopped_early"]
