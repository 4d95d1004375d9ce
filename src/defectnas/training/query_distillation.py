"""Distilling a shallower query tower from a trained model's: a faster online path, the same product cache.

Why: a ``serve`` request's cost grows with the query tower's pre-trained layers (6 in
``train``'s default: most of a request). A *student* with K of them, trained to reproduce the
*teacher*'s query encodings, serves ~2× faster for K = 2. Its title tower and scoring head are
the teacher's, unchanged and frozen, so every product cache the teacher built stays valid for it
(the cache checks the title tower's hash, :func:`defectnas.serving.cache.title_tower_hash`). The
architecture search's own children with fewer query layers learn from the labels alone and lose
more accuracy (README, "Product goal").

Method: knowledge distillation of the query tower only (Hinton et al. 2015, "Distilling the
Knowledge in a Neural Network"), with intermediate-state matching as in TinyBERT (Jiao et al.
2020). Each step minimises

    MSE(token states) + MSE(pooled vector)            on 128 query-like texts
    + logit_weight · MSE(student logit, teacher logit)  on 256 training pairs (off by default)

where the texts are the training split's queries, each multi-word query less one word, and a
2–5-word prefix of each of its titles (query-like, and unlabelled: the teacher labels them;
``text_windows`` adds runs of words from anywhere in the titles: :func:`query_like_texts`), and
a pair's title encoding is taken from the frozen title tower, as a product cache holds it. The
student's K layers start as the teacher's bottom K − 1 query layers and its top one
(:func:`student_layer_sources`). AdamW with cosine decay; the epoch with the best validation AP
is kept; a checkpoint after each epoch makes a killed run resumable (``resume=True``), as in
:mod:`.trainer`.

Why these defaults (README, "Product goal"; Home Depot's sample): the first recipe started the
student from the teacher's bottom two layers; its students lost 0.013 test AP (3 teachers), all
of it in MiniLM's sentence vector (the normalised mean of the top layer's states: swapping the
teacher's into a student's pooled vector recovers the teacher's AP,
``benchmarks/query_distillation_diagnosis.py``). Keeping the teacher's top layer — fine-tuned,
and the one whose states the head reads — closed that gap (three teachers: the students score
as their teachers do). Three times the texts (``text_windows=3``) did the same at 1.6× the
time, and helped only students without the top layer. The logit term encodes each step's 256
pairs' queries again (3× an epoch's cost) and did not move held-out AP, so it is off.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from ..progress import progress

from ..config import ModelConfig, to_dict
from ..data.tokenizer import trim_padding
from ..errors import ConfigError
from ..model import DefectNet
from ..model.pairs import distinct_rows, encode_rows, pair_logits, take_rows
from .metrics import average_precision
from ..storage import load_metadata, tensors_digest
from .trainer import CHECKPOINT, Pairs, TrainResult, _load_checkpoint, _save_checkpoint, check_finite_loss


@dataclass
class QueryDistillationConfig:
    """How a query tower is distilled (saved in the student's ``history``)."""

    layers: int = 2  # pre-trained layers of the student's query tower (all fine-tuned)
    epochs: int = 4  # passes over the query-like texts (~1 min each on Home Depot's sample, 2 cores; ~3× with the logit term)
    text_windows: int = 0  # runs of consecutive words taken from each training title as more texts (query_like_texts)
    init: str = "bottom+top"  # which teacher layers the student's start as (student_layer_sources)
    lr: float = 5e-4  # AdamW's peak learning rate (cosine decay to 0)
    logit_weight: float = 0.0  # weight of the teacher-logit MSE on training pairs (0: encodings only)
    text_batch: int = 128  # query-like texts per step
    pair_batch: int = 256  # training pairs per step (for the logit loss)
    seed: int = 0
    device: str = "cpu"
    teacher_digest: str = ""  # set by distill_query_tower: a checkpoint resumes only the run of the same teacher

    def __post_init__(self) -> None:
        # each message names the flag of distill-query (and the field, for the Python API)
        for flag, name, value, low in (("--epochs", "epochs", self.epochs, 1), ("--text-windows", "text_windows", self.text_windows, 0),
                                       (None, "text_batch", self.text_batch, 1), (None, "pair_batch", self.pair_batch, 1)):
            if value < low:
                raise ConfigError(f"query distillation: {f'{flag} ({name})' if flag else name} must be at least {low}, got {value}")
        check_init(self.init)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"query distillation: --lr (lr) must be a finite number more than 0, got {self.lr:g}")
        if self.logit_weight < 0:
            raise ConfigError(f"query distillation: --logit-weight (logit_weight) must be 0 or more, got {self.logit_weight:g}")


def student_config(teacher: ModelConfig, layers: int) -> ModelConfig:
    """The teacher's configuration with a ``layers``-layer, fully fine-tuned query tower.

    Raises ConfigError when the teacher has no pre-trained query layers to distil, shares
    fine-tuned layers between its towers (``backbone_trainable``), or ``layers`` is not fewer
    than its own."""
    if teacher.encoder != "transformer" or teacher.query_backbone_layers == 0:
        raise ConfigError("query distillation needs a model whose query tower has pre-trained layers (query_backbone_layers > 0)")
    if teacher.backbone_trainable:
        raise ConfigError("query distillation needs a model whose towers do not share fine-tuned pre-trained layers "
                          f"(this one has backbone_trainable={teacher.backbone_trainable})")
    if teacher.query_backbone_layers == 1:
        raise ConfigError("the model's query tower has a single pre-trained layer: there is no shallower tower to distil it into")
    if not 1 <= layers < teacher.query_backbone_layers:
        raise ConfigError(f"--layers {layers}: the student's query tower needs 1 to {teacher.query_backbone_layers - 1} pre-trained "
                          f"layers (fewer than the model's {teacher.query_backbone_layers})")
    cfg = copy.deepcopy(teacher)
    cfg.query_backbone_layers = cfg.query_backbone_trainable = layers
    return cfg


STUDENT_INITS = ("bottom+top", "bottom")


def check_init(init: str) -> None:
    """ConfigError unless ``init`` is one of STUDENT_INITS."""
    if init not in STUDENT_INITS:
        raise ConfigError(f"query distillation's init must be one of {', '.join(STUDENT_INITS)}, got {init!r}")


def student_layer_sources(teacher_layers: int, layers: int, init: str = "bottom+top") -> list[int]:
    """Which of the teacher's query layers (0 = bottom) each of the student's ``layers`` starts as.

    ``"bottom+top"`` (the default): the bottom ``layers - 1`` and the top one (for one layer, the
    bottom one). The top layer is the one whose states the head reads (token states, pooled
    vector, and MiniLM's sentence vector is their mean), and in ``train``'s default model it is
    the fine-tuned one, so a student that keeps it starts with its outputs in the space the head
    was trained on; measured on Home Depot's sample (seed 700 teacher, 2 layers), the student
    then loses 0.0019 validation AP where the first recipe's, started as the bottom two, lost
    0.0153 (README, "Product goal"). ``"bottom"``: the bottom ``layers``
    (Sajjad et al. 2023, "On the effect of dropping layers of pre-trained transformer models",
    found them the best to keep when *fine-tuning* on labels): this module's first recipe."""
    check_init(init)
    if init == "bottom" or layers == 1:  # a lone top layer would read word embeddings it has never seen
        return list(range(layers))
    return [*range(layers - 1), teacher_layers - 1]


def student_net(teacher: DefectNet, layers: int, init: str = "bottom+top") -> DefectNet:
    """A student network: the teacher's weights everywhere but the query tower's pre-trained
    layers, which start as the teacher's query layers :func:`student_layer_sources` names (its own
    fine-tuned copy where it has one, else the shared pre-trained layer)."""
    cfg = student_config(teacher.cfg, layers)
    student = DefectNet(cfg)
    own = student.state_dict()
    student.load_state_dict({k: v for k, v in teacher.state_dict().items() if k in own and not k.startswith("query_encoder.embed.top.")},
                            strict=False)
    t_embed = teacher.query_encoder.embed
    t_first_own = t_embed.depth - (len(t_embed.top) if t_embed.top is not None else 0)  # the teacher's first own (tuned) layer
    for layer, i in zip(student.query_encoder.embed.top, student_layer_sources(t_embed.depth, layers, init)):
        source = t_embed.top[i - t_first_own] if i >= t_first_own else teacher.backbone.encoder.layer[i]
        layer.load_state_dict(source.state_dict())
    return student


def query_like_texts(queries: list[str], titles: list[str], seed: int, windows: int = 0) -> list[str]:
    """The unlabelled texts a student learns to encode as its teacher does (seeded, distinct, in order):
    the distinct training queries; each multi-word query again with one word left out; and for each
    distinct title a 2–5-word prefix and ``windows`` runs of 1–5 consecutive words from anywhere in it.

    Why: the student must encode *new* queries as its teacher does, and short spans of titles are
    what shoppers type ("cordless drill", "white subway tile"): TinyBERT (Jiao et al. 2020) found
    augmented text necessary for task distillation, done here with the catalogue's own words. On
    Home Depot's sample (seed-700 teacher) more spans helped a student started as the teacher's
    bottom layers (test AP loss 0.0116 with 3 windows a title against 0.0173 with the prefixes),
    and nothing measurable once the student keeps the teacher's top layer (README, "Product
    goal"), so ``distill-query`` takes none by default (``--text-windows``)."""
    rng = np.random.default_rng(seed)
    distinct_queries = list(dict.fromkeys(queries))
    texts = list(distinct_queries)
    for t in dict.fromkeys(titles):
        words = t.split()
        for _ in range(windows):
            n = int(rng.integers(1, 6))
            start = int(rng.integers(0, max(1, len(words) - n + 1)))
            texts.append(" ".join(words[start : start + n]))
        texts.append(" ".join(words[: int(rng.integers(2, 6))]))
    for q in distinct_queries:
        words = q.split()
        if len(words) > 1:
            left_out = int(rng.integers(0, len(words)))
            texts.append(" ".join(words[:left_out] + words[left_out + 1 :]))
    return [t for t in dict.fromkeys(texts) if t]


class CachedTitles:
    """Pairs whose distinct titles are encoded once by the (frozen) title tower, as a product cache
    holds them, so that query towers can be scored on them cheaply: with gradients
    (:meth:`logits_of`) or all at once (:meth:`logits`). ``t_codes`` (N,): each pair's row of
    ``titles``."""

    @torch.no_grad()
    def __init__(self, net: DefectNet, pairs: Pairs, device: str = "cpu") -> None:
        self.query, self.device = pairs.query, device
        self.t_codes, t_first = distinct_rows(pairs.title)
        was = net.training
        net.eval()
        self.titles = encode_rows(net.encode_title, pairs.title[t_first], 512, device)
        net.train(was)
        self.title_ids = pairs.title

    def __len__(self) -> int:
        return len(self.t_codes)

    def logits_of(self, net: DefectNet, rows: np.ndarray) -> torch.Tensor:
        """Logits (len(rows),) of pairs ``rows``, their queries encoded by ``net`` in its current mode."""
        q = net.encode_query(torch.from_numpy(trim_padding(self.query[rows])).to(self.device))
        return net.score(q, take_rows(self.titles, torch.from_numpy(self.t_codes[rows]).to(self.device)))

    def logits(self, net: DefectNet) -> np.ndarray:
        """Logits (N,) float32 of every pair in eval mode (:func:`~defectnas.model.pairs.pair_logits`:
        each distinct query encoded once, the titles taken from the held encodings)."""
        return pair_logits(net, self.query, self.title_ids, device=self.device, cache_rows=self.t_codes,
                           cached_titles=lambda rows: take_rows(self.titles, torch.from_numpy(rows).to(self.device)))


def distill_query_tower(teacher: DefectNet, student: DefectNet, texts: np.ndarray, train_pairs: Pairs, valid_pairs: Pairs,
                        cfg: QueryDistillationConfig, checkpoint_dir: str | Path | None = None, resume: bool = False,
                        quiet: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``student``'s query tower (in place) to reproduce ``teacher``'s; keep the epoch of best
    validation AP (raw scores) and return its history, AP and validation logits.

    ``texts``: (N, Lq) token ids of query-like texts (:func:`query_like_texts`); ``train_pairs``
    and ``valid_pairs``: token ids of labelled pairs (labels of the training pairs are not used:
    the teacher's logits are the targets). ``checkpoint_dir``: where ``checkpoint.safetensors`` is
    written after each epoch; with ``resume`` an existing one is continued."""
    device = torch.device(cfg.device)
    teacher.to(device).eval()
    student.to(device)
    for p in student.parameters():
        p.requires_grad_(False)
    params = [p for n, p in student.query_encoder.named_parameters() if not n.startswith("embed.backbone")]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    result, best_state, start_epoch = TrainResult(), None, 0
    rng = np.random.default_rng(cfg.seed)
    cfg = cfg if cfg.teacher_digest else dataclasses.replace(cfg, teacher_digest=state_digest(teacher))
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        _check_same_run(ckpt_path, cfg)
        start_epoch, _, best_state, result, rng, _ = _load_checkpoint(ckpt_path, student, optimizer)
        result.resumed_after_epoch = start_epoch
        if log:
            log(f"resumed from {ckpt_path} after epoch {start_epoch}")
    elif resume and log:
        log(f"no checkpoint in {checkpoint_dir} to resume from: starting at epoch 1")

    if log:
        training = f"{len(train_pairs.query)} training and " if cfg.logit_weight else ""
        log(f"encoding the titles of {training}{len(valid_pairs.query)} validation pairs once (the frozen title tower)"
            + (", the teacher's scores of the training pairs" if cfg.logit_weight else "") + f" and its encodings of the {len(texts)} texts")
    train_side = CachedTitles(teacher, train_pairs, cfg.device) if cfg.logit_weight else None
    valid_side = CachedTitles(teacher, valid_pairs, cfg.device)
    targets = torch.from_numpy(train_side.logits(teacher)).to(device) if cfg.logit_weight else None
    with torch.no_grad():  # the teacher's encodings of every text, once (eval mode: the same in every epoch)
        encoded = encode_rows(teacher.encode_query, texts, 512, cfg.device)
    steps_per_epoch = -(-len(texts) // cfg.text_batch)
    total_steps = max(1, cfg.epochs * steps_per_epoch)

    for epoch in range(start_epoch, cfg.epochs):
        started, losses = time.time(), []
        order = rng.permutation(len(texts))
        pair_order = rng.permutation(len(train_side)) if train_side is not None else None
        bar = progress(range(steps_per_epoch), quiet=quiet, desc=f"distil epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for step in bar:
            for group in optimizer.param_groups:  # cosine decay, a function of the step alone (exact on resume)
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps_per_epoch + step) / total_steps))
            student.eval()
            student.query_encoder.train()  # dropout in the student's tower only: the frozen head scores as served
            rows = order[step * cfg.text_batch : (step + 1) * cfg.text_batch]
            target = take_rows(encoded, torch.from_numpy(rows).to(device))  # padding trimmed as trim_padding trims the ids
            out = student.encode_query(torch.from_numpy(trim_padding(texts[rows])).to(device))
            m = target.mask.unsqueeze(-1).to(out.tokens.dtype)
            loss = ((out.tokens - target.tokens) ** 2 * m).sum() / m.sum() / out.tokens.shape[-1] + F.mse_loss(out.vector, target.vector)
            if targets is not None:
                start = (step * cfg.pair_batch) % max(1, len(pair_order) - cfg.pair_batch + 1)
                pairs = pair_order[start : start + cfg.pair_batch]
                loss = loss + cfg.logit_weight * F.mse_loss(train_side.logits_of(student, pairs), targets[torch.from_numpy(pairs).to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        check_finite_loss(losses, epoch + 1, "query distillation", f"--lr {cfg.lr:g}")
        student.eval()
        valid_logits = valid_side.logits(student)
        ap = average_precision(valid_pairs.label, 1 / (1 + np.exp(-valid_logits)))
        record = {"epoch": epoch + 1, "phase": "distil-query", "loss": float(np.mean(losses)), "valid_ap": ap,
                  "seconds": round(time.time() - started, 2)}
        if ap > result.best_ap or best_state is None:
            result.best_ap, result.best_epoch, result.valid_logits = ap, epoch + 1, valid_logits
            best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        result.history.append(record)
        if ckpt_path is not None:  # before the epoch's line: an epoch the log shows is never lost to a kill
            _save_checkpoint(ckpt_path, student, optimizer, cfg, epoch + 1, 0, best_state, result, rng, stopped_early=False)
        if log:
            log(json.dumps(record))
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return result


def state_digest(net: torch.nn.Module) -> str:
    """``sha256:<hex>`` of a network's tensors (names, shapes and bytes): which teacher a run distils."""
    return tensors_digest(net.state_dict())


def _check_same_run(path: Path, cfg: QueryDistillationConfig) -> None:
    """ConfigError unless the checkpoint at ``path`` was written by a run of the same teacher and settings."""
    meta = load_metadata(path)
    saved, now = meta.get("train_config", {}), to_dict(cfg)
    differ = [k for k in now if k != "device" and saved.get(k) != now[k]]
    if differ:
        what = "teacher" if "teacher_digest" in differ else ", ".join(f"{k} {saved.get(k)!r} (now {now[k]!r})" for k in differ)
        raise ConfigError(f"{path}: a checkpoint of another distillation (its {what}); drop --resume to start again, "
                          f"or resume with the settings it was started with")
