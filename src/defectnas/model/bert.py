"""A pre-trained BERT-family encoder (all-MiniLM-L6-v2 by default) as the bottom of a tower.

Why: titles are encoded once per catalogue, so the product side can afford the contextual
layers of a pre-trained model that a cross-encoder would run for every (query, product) pair.
The searched cells then sit on top of these states.

Why our own forty lines instead of ``transformers.BertModel``: the parameter names are the
standard BERT checkpoint names (so ``model.safetensors`` of any BERT-style model loads with
``load_state_dict``), and the layer loop is ours, which lets a tower run only its first ``n``
layers, and lets the frozen bottom layers be memoised per text (:class:`FrozenStatesMemo`):
during training each title passes through the frozen layers once, not once per epoch.
A test checks the outputs against ``transformers`` on the bundled MiniLM.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

# the fields of a BERT config.json we need, with BERT-base's defaults
_CONFIG_FIELDS = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
}


def read_bert_config(model_dir: Path) -> dict[str, Any]:
    """The architecture fields of ``model_dir/config.json`` (a BERT-style checkpoint)."""
    try:
        raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{model_dir}: no readable config.json for the pre-trained encoder ({type(e).__name__})") from None
    if raw.get("model_type", "bert") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
        raise ConfigError(f"{model_dir}: the pre-trained encoder must be a BERT-style model with GELU (got model_type={raw.get('model_type')!r})")
    return {k: raw.get(k, v) for k, v in _CONFIG_FIELDS.items()}


class BertEmbeddings(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"], padding_idx=0)
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(h)


class _Linear(nn.Module):
    """``dense`` (+ ``LayerNorm``): named as in BERT checkpoints."""

    def __init__(self, d_in: int, d_out: int, eps: float | None = None) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(d_out, eps=eps)


class _SelfAttention(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        h = c["hidden_size"]
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)


class _Attention(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Linear(c["hidden_size"], c["hidden_size"], c["layer_norm_eps"])


class BertLayer(nn.Module):
    """Post-norm transformer layer: attention → add & norm → GELU feed-forward → add & norm."""

    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        self.heads = c["num_attention_heads"]
        self.attention = _Attention(c)
        self.intermediate = _Linear(c["hidden_size"], c["intermediate_size"])
        self.output = _Linear(c["intermediate_size"], c["hidden_size"], c["layer_norm_eps"])

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = h.shape
        att = self.attention.self
        split = lambda x: x.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # noqa: E731  (B, heads, T, C/heads)
        a = F.scaled_dot_product_attention(split(att.query(h)), split(att.key(h)), split(att.value(h)), attn_mask=mask[:, None, None, :])
        a = a.transpose(1, 2).reshape(B, T, C)
        h = self.attention.output.LayerNorm(h + self.attention.output.dense(a))
        f = self.output.dense(F.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(h + f)


class _Encoder(nn.Module):
    def __init__(self, c: dict[str, Any], layers: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(layers))


class FrozenStatesMemo:
    """Outputs of the frozen bottom layers, remembered per (text ids, depth).

    Exact: frozen layers in eval mode are a pure function of the ids. Off unless enabled
    (:func:`frozen_states_memoised`: training, scoring a split, the titles a latency timer caches),
    so timed requests and serving measure the real cost; bounded by ``limit`` entries (then it
    stops remembering).
    """

    def __init__(self, limit: int = 200_000, shared: bool = False) -> None:
        self.limit, self.store, self.enabled, self.shared = limit, {}, False, shared
        self.fill_seconds, self.fill_rows = 0.0, 0  # wall seconds spent running the frozen layers on texts not yet remembered, and how many

    def clear(self) -> None:
        self.store = {}


_SHARED_MEMOS: dict[str, FrozenStatesMemo] | None = None


def share_memos_between_models(on: bool = True) -> None:
    """Let every model built from now on in this process share one memo per pre-trained encoder.

    Why: an architecture search trains hundreds of children over the same texts with the same
    frozen layers; sharing makes each text pass those layers once per process, not once per child.
    The memo is still used only around untimed work (:func:`frozen_states_memoised`), never in a
    timed request, so measured latencies stay honest.
    """
    global _SHARED_MEMOS
    _SHARED_MEMOS = (_SHARED_MEMOS if _SHARED_MEMOS is not None else {}) if on else None


@contextmanager
def memos_shared_between_models():
    """:func:`share_memos_between_models` for the block only (a search whose children run in this
    process); afterwards sharing is as it was, and memos the block started are emptied, so later
    models neither share them nor keep their memory alive."""
    global _SHARED_MEMOS
    before = _SHARED_MEMOS
    share_memos_between_models()
    try:
        yield
    finally:
        if before is None:
            for memo in _SHARED_MEMOS.values():
                memo.clear()
                memo.enabled = memo.shared = False
        _SHARED_MEMOS = before


@contextmanager
def shared_memos():
    """Models built inside the block share memos, used for training *and* prediction (several
    models trained and scored on one split); leaving the block empties and switches them off."""
    global _SHARED_MEMOS, _MEMO_AT_INFERENCE
    before = _SHARED_MEMOS, _MEMO_AT_INFERENCE
    _SHARED_MEMOS, _MEMO_AT_INFERENCE = {}, True
    try:
        yield
    finally:
        for memo in _SHARED_MEMOS.values():
            memo.clear()
            memo.enabled = memo.shared = False
        _SHARED_MEMOS, _MEMO_AT_INFERENCE = before


_MEMO_AT_INFERENCE = False


@contextmanager
def frozen_states_memoised(model: nn.Module):
    """Within the block, ``model``'s frozen pre-trained layers remember their outputs per text
    (:class:`FrozenStatesMemo`); afterwards the memo is as it was, and emptied unless it is shared.

    For work whose time is not what is measured — training, scoring a split, encoding the titles a
    latency timer caches before it times requests — never around a timed request. Exact: frozen
    layers in eval mode are a pure function of the ids. A model without a pre-trained backbone is
    left as it is.
    """
    backbone = getattr(model, "backbone", None)
    memo = backbone.memo if backbone is not None else None
    was_enabled = memo is not None and memo.enabled
    if memo is not None:
        memo.enabled = True
    try:
        yield
    finally:
        if memo is not None:
            memo.enabled = was_enabled
            if not memo.shared:
                memo.clear()


def frozen_fill() -> tuple[float, int]:
    """(seconds, texts) the shared memos have spent filling in this process: running frozen layers
    on texts not seen before. A search's first child pays the pass over every text and later ones
    almost nothing, so its budget estimates a child's cost without that one-off part; and seconds
    per text is this machine's speed at MiniLM's layers, by which the distillation is estimated."""
    memos = (_SHARED_MEMOS or {}).values()
    return sum(m.fill_seconds for m in memos), sum(m.fill_rows for m in memos)


def _memo_for(key: str) -> FrozenStatesMemo:
    if _SHARED_MEMOS is None:
        return FrozenStatesMemo()
    if key not in _SHARED_MEMOS:
        memo = _SHARED_MEMOS[key] = FrozenStatesMemo(shared=True)
        memo.enabled = _MEMO_AT_INFERENCE
    return _SHARED_MEMOS[key]


class PretrainedBackbone(nn.Module):
    """The first ``layers`` layers of a BERT-style encoder; the bottom ``layers - trainable`` are frozen.

    ``forward(ids, depth)`` takes our ids (no [CLS]/[SEP], right-padded with 0), adds [CLS]
    and [SEP] as the model was trained with, runs ``depth`` layers and returns the states of
    the original positions, (B, T, hidden).
    """

    def __init__(self, config: dict[str, Any], layers: int, trainable: int = 0, cls_id: int = 101, sep_id: int = 102, source: str = "") -> None:
        super().__init__()
        if not 0 < layers <= config["num_hidden_layers"]:
            raise ConfigError(f"the pre-trained encoder has {config['num_hidden_layers']} layers; cannot use {layers}")
        if not 0 <= trainable <= layers:
            raise ConfigError(f"backbone_trainable must be between 0 and {layers}, got {trainable}")
        self.config = config
        self.hidden_size, self.frozen_layers = config["hidden_size"], layers - trainable
        self.cls_id, self.sep_id = cls_id, sep_id
        self.embeddings = BertEmbeddings(config)
        self.encoder = _Encoder(config, layers)
        for p in self.embeddings.parameters():
            p.requires_grad_(False)
        for layer in self.encoder.layer[: self.frozen_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)
        self.key = json.dumps([source, config, cls_id, sep_id], sort_keys=True)  # same key → same frozen outputs
        self.memo = _memo_for(self.key)

    def train(self, mode: bool = True) -> "PretrainedBackbone":
        """Frozen parts stay in eval mode (no dropout), so their outputs can be memoised."""
        super().train(mode)
        self.embeddings.eval()
        for layer in self.encoder.layer[: self.frozen_layers]:
            layer.eval()
        return self

    def forward(self, ids: torch.Tensor, depth: int, top: nn.ModuleList | None = None) -> torch.Tensor:
        """States (B, T, H) after ``depth`` layers; with ``top`` (a tower's own fine-tuned copies of
        its top layers), the shared layers run to ``depth - len(top)`` and the copies run after them."""
        lengths = (ids != 0).sum(1)
        shared = depth - (len(top) if top is not None else 0)
        frozen = min(shared, self.frozen_layers)
        h = self._frozen_states(ids, lengths, frozen)  # (B, T+2, H) with [CLS] … [SEP]
        mask = torch.arange(h.shape[1], device=ids.device)[None, :] < (lengths + 2)[:, None]
        for layer in [*self.encoder.layer[frozen:shared], *(top if top is not None else [])]:
            h = layer(h, mask)
        return h[:, 1 : ids.shape[1] + 1]

    def _with_specials(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B = ids.shape[0]
        out = torch.zeros(B, ids.shape[1] + 2, dtype=ids.dtype, device=ids.device)
        out[:, 0] = self.cls_id
        out[:, 1:-1] = ids
        out[torch.arange(B, device=ids.device), lengths + 1] = self.sep_id
        return out

    @torch.no_grad()
    def _run_frozen(self, ids: torch.Tensor, lengths: torch.Tensor, depth: int) -> torch.Tensor:
        full = self._with_specials(ids, lengths)
        mask = full != 0
        h = self.embeddings(full)
        for layer in self.encoder.layer[:depth]:
            h = layer(h, mask)
        return h

    def _frozen_states(self, ids: torch.Tensor, lengths: torch.Tensor, depth: int) -> torch.Tensor:
        """Frozen-layer states for a batch, computing only the rows not memoised yet."""
        if not self.memo.enabled:
            return self._run_frozen(ids, lengths, depth)
        memo = self.memo.store
        keys = [(depth, row[:n].tobytes()) for row, n in zip(ids.cpu().numpy(), lengths.tolist())]
        fresh: dict[int, torch.Tensor] = {}
        missing = [i for i, k in enumerate(keys) if k not in memo]
        if missing:  # run the frozen layers on the new texts only
            started = time.perf_counter()
            idx = torch.tensor(missing, device=ids.device)
            sub_len = lengths[idx]
            states = self._run_frozen(ids[idx][:, : int(sub_len.max())], sub_len, depth)
            fresh = {i: states[j, : int(sub_len[j]) + 2] for j, i in enumerate(missing)}
            if len(memo) < self.memo.limit:
                memo.update((keys[i], s.clone()) for i, s in fresh.items())
            self.memo.fill_seconds += time.perf_counter() - started
            self.memo.fill_rows += len(missing)
        out = torch.zeros(ids.shape[0], ids.shape[1] + 2, self.hidden_size, device=ids.device)
        for i, k in enumerate(keys):
            s = fresh[i] if i in fresh else memo[k]
            out[i, : s.shape[0]] = s
        return out
