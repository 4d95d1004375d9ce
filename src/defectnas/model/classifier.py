"""The two-tower defect classifier network.

query ids ─ query encoder (2 cells) ─ pooled q ┐
                                               ├ interaction [q, t, q⊙t, |q−t|] (+ matching) ─ dense ─ logit
title ids ─ title encoder (5 cells) ─ pooled t ┘

Why two towers: the title side depends only on the product, so its encoding can be computed
once per catalogue and cached; a request then costs one short query encoding plus a small
head per product. ``encode_query`` / ``encode_title`` / ``score`` expose exactly that split.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..config import ModelConfig
from .bert import PretrainedBackbone
from .coattention import CoAttention
from .encoder import ContextualEmbedding, Encoder
from .lstm import LSTMEncoder
from .late_interaction import LateInteraction
from .matching import MultiPerspectiveMatching


class Encoded(NamedTuple):
    """One side's encoding: token states (B, T, C), pooled vector (B, C), mask (B, T)."""

    tokens: torch.Tensor
    vector: torch.Tensor
    mask: torch.Tensor


class DefectNet(nn.Module):
    """Logit of "this product is a defect for this query"."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set (from the tokenizer) before building the model")
        self.cfg = cfg
        d, emb = cfg.d_model, cfg.embedding_dim or cfg.d_model
        # pre-trained contextual layers under the towers (one shared copy; see model/bert.py)
        depth = max(cfg.backbone_layers, cfg.query_backbone_layers) if cfg.encoder != "lstm" else 0
        backbone = PretrainedBackbone(cfg.backbone, depth, cfg.backbone_trainable, cfg.backbone["cls_token_id"], cfg.backbone["sep_token_id"], cfg.pretrained_model) if depth else None
        # with pre-trained layers under both towers, each pooled vector carries the pre-trained sentence vector too
        both = bool(cfg.backbone_layers and cfg.query_backbone_layers and cfg.encoder != "lstm" and cfg.sentence_vector)
        self.vector_dim = d + cfg.backbone["hidden_size"] if both else d
        contextual = lambda layers, tuned: ContextualEmbedding(backbone, layers, d, cfg.dropout, sentence=both, trainable=tuned) if layers else None  # noqa: E731
        if cfg.encoder == "lstm":  # the recurrent baseline: same towers, BiLSTMs instead of cells
            self.query_encoder = LSTMEncoder(cfg.vocab_size, emb, d, cfg.query_max_len, cfg.lstm_layers, cfg.dropout)
            self.title_encoder = LSTMEncoder(cfg.vocab_size, emb, d, cfg.title_max_len, cfg.lstm_layers, cfg.dropout)
        else:
            self.query_encoder = Encoder(cfg.vocab_size, emb, d, cfg.query_max_len, cfg.query_layers, cfg.dropout, contextual(cfg.query_backbone_layers, cfg.query_backbone_trainable))
            self.title_encoder = Encoder(cfg.vocab_size, emb, d, cfg.title_max_len, cfg.title_layers, cfg.dropout, contextual(cfg.backbone_layers, cfg.title_backbone_trainable))
        self.matching = MultiPerspectiveMatching(d, cfg.perspectives) if cfg.matching else None
        self.late = LateInteraction(d, cfg.perspectives) if cfg.late_interaction else None
        # the co-attention baseline replaces the pooled interaction [q, t, q⊙t, |q−t|]
        self.coattention = CoAttention(d) if cfg.interaction == "coattention" else None
        features = (self.coattention.out_features if self.coattention else 4 * self.vector_dim) + (self.matching.out_features if self.matching else 0) \
            + (self.late.out_features if self.late else 0)
        h = cfg.dense_hidden
        self.head = nn.Sequential(
            nn.Linear(features, h), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(h, h), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(h, 1),
        )

        self.backbone = backbone
        tables = [enc.embed.tokens for enc in (self.query_encoder, self.title_encoder) if hasattr(enc.embed, "tokens")]
        if backbone is not None:
            # a tower without contextual layers reads the backbone's (frozen) word table
            for enc in (self.query_encoder, self.title_encoder):
                if hasattr(enc.embed, "tokens"):
                    enc.embed.tokens = backbone.embeddings.word_embeddings
        elif cfg.embedding_init != "trained" and cfg.freeze_embeddings and len(tables) == 2:
            # one frozen pre-trained table serves both towers (each keeps its own projection):
            # the towers stay separate where they learn, and the model file stays half the size
            self.title_encoder.embed.tokens = self.query_encoder.embed.tokens
            self.query_encoder.embed.tokens.weight.requires_grad_(False)

    def set_word_embeddings(self, weight: torch.Tensor) -> None:
        """Initialise the token tables from a pre-trained (vocab, dim) matrix."""
        with torch.no_grad():
            for enc in (self.query_encoder, self.title_encoder):
                if hasattr(enc.embed, "tokens"):
                    enc.embed.tokens.weight.copy_(weight)

    def load_backbone(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy a BERT-style checkpoint's weights into the pre-trained layers (extra layers ignored)."""
        own = self.backbone.state_dict()
        strip = lambda k: k[5:] if k.startswith("bert.") else k  # noqa: E731
        found = {strip(k): v for k, v in tensors.items() if strip(k) in own}
        missing = sorted(set(own) - set(found))
        if missing:
            raise ValueError(f"the pre-trained checkpoint lacks {len(missing)} tensors, e.g. {missing[0]}")
        self.backbone.load_state_dict(found)
        for enc in (self.query_encoder, self.title_encoder):  # a tower's own fine-tuned copies start as the layers they replace
            top = getattr(enc.embed, "top", None)
            if top is not None:
                first = enc.embed.depth - len(top)
                for i, layer in enumerate(top):
                    layer.load_state_dict(self.backbone.encoder.layer[first + i].state_dict())

    def encode_query(self, ids: torch.Tensor) -> Encoded:
        return Encoded(*self.query_encoder(ids))

    def encode_title(self, ids: torch.Tensor) -> Encoded:
        return Encoded(*self.title_encoder(ids))

    def score(self, q: Encoded, t: Encoded) -> torch.Tensor:
        """Logits (B,) for row-aligned query and title encodings."""
        if self.coattention is not None:
            parts = [self.coattention(q.tokens, q.mask, t.tokens, t.mask)]  # (B, 4C)
        else:
            parts = [q.vector, t.vector, q.vector * t.vector, (q.vector - t.vector).abs()]  # 4 × (B, C)
        if self.matching is not None:  # matches tokens against the other side's learned pooled vector (first C dims)
            d = self.cfg.d_model
            parts.append(self.matching(q.tokens, q.mask, q.vector[:, :d], t.tokens, t.mask, t.vector[:, :d]))
        if self.late is not None:
            parts.append(self.late(q.tokens, q.mask, t.tokens, t.mask))
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)  # (B,)

    def score_one_query(self, q: Encoded, t: Encoded) -> torch.Tensor:
        """Logits (N,) of one query (its encoding with batch size 1) against N titles: :meth:`score`
        on the query repeated N times, up to float rounding (tests/model check it), computed
        without the repetition — what a served request is (1 query × N cached products).

        Why: the first dense layer reads [q, t, q⊙t, |q−t|, matching]; for one query its q part
        is one vector product, and its t and q⊙t parts fold into one (N, V) × (V, H) product with
        the weights ``W_t + W_p ⊙ q``; the matching layer meets the title tokens in one matrix
        product (:meth:`~.matching.MultiPerspectiveMatching.one_query`). The co-attention
        baseline has no such form and scores the repeated query."""
        n = t.vector.shape[0]
        first = self.head[0]
        if self.coattention is not None or not isinstance(first, nn.Linear):
            return self.score(Encoded(q.tokens.expand(n, -1, -1), q.vector.expand(n, -1), q.mask.expand(n, -1)), t)
        qv = q.vector[0]  # (V,)
        v = qv.shape[0]
        w = first.weight  # (H, 4V [+ 4P])
        w_q, w_t, w_p, w_a = w[:, :v], w[:, v : 2 * v], w[:, 2 * v : 3 * v], w[:, 3 * v : 4 * v]
        h = (qv @ w_q.T + first.bias) + t.vector @ (w_t + w_p * qv).T + (qv - t.vector).abs() @ w_a.T  # (N, H)
        if self.matching is not None:
            d = self.cfg.d_model
            m = self.matching.one_query(q.tokens[0], q.mask[0], qv[:d], t.tokens, t.mask, t.vector[:, :d])  # (N, 4P)
            h = h + m @ w[:, 4 * v : 4 * v + m.shape[1]].T
        if self.late is not None:
            li = self.late.one_query(q.tokens[0], q.mask[0], t.tokens, t.mask)  # (N, 4P)
            h = h + li @ w[:, w.shape[1] - li.shape[1] :].T
        return self.head[1:](h).squeeze(-1)

    def forward(self, query_ids: torch.Tensor, title_ids: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode_query(query_ids), self.encode_title(title_ids))

    @property
    def needs_title_tokens(self) -> bool:
        """Whether ``score`` reads the title's token states (matching, late interaction, co-attention), not just its vector."""
        return self.matching is not None or self.late is not None or self.coattention is not None

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
