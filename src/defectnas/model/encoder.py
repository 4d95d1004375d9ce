"""A text encoder: token embeddings, positions, a stack of cells, self-attention pooling.

Why separate encoders for query and title: a query is short and encoded online for every
request, so its encoder stays small and fixed; a title is longer and encoded once per catalogue,
so its encoder can afford more layers (and is what the architecture search varies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LayerSpec
from .bert import BertLayer
from .cell import Cell


class SelfAttentionPooling(nn.Module):
    """Weighted mean of the token states, weights from a small scoring MLP (padding gets 0)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, 1))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.score(h).squeeze(-1)  # (B, T)
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1)  # (B, T)
        return torch.einsum("bt,btc->bc", weights, h)  # (B, C)


class TokenEmbedding(nn.Module):
    """Token table (trained, or pre-trained and optionally frozen) projected to d_model, plus positions.

    Positions start small and the sum is layer-normalised (as in BERT): a pre-trained table's
    vectors are short, and unit-variance position vectors would drown them.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.project = nn.Linear(embedding_dim, d_model) if embedding_dim != d_model else nn.Identity()
        self.positions = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device)
        return self.drop(self.norm(self.project(self.tokens(ids)) + self.positions(pos)))  # (B, T, C)


class ContextualEmbedding(nn.Module):
    """The first ``depth`` layers of a shared pre-trained encoder, projected to d_model.

    Replaces :class:`TokenEmbedding` when a tower starts from pre-trained contextual layers
    (the pre-trained model brings its own positions). Also returns the pre-trained model's own
    sentence vector (mean of its states, L2-normalised, as sentence-transformers pools
    all-MiniLM-L6-v2), scaled to unit variance per dimension: on small data a head that reads
    it directly generalises better than anything learned on top (see the README).
    """

    def __init__(self, backbone: nn.Module, depth: int, d_model: int, dropout: float, sentence: bool = True,
                 trainable: int = 0) -> None:
        super().__init__()
        self.backbone, self.depth, self.sentence = backbone, depth, sentence
        # the tower's own fine-tuned copies of its top ``trainable`` pre-trained layers (filled by
        # DefectNet.load_backbone); the layers below stay shared, frozen and memoised
        self.top = nn.ModuleList(BertLayer(backbone.config) for _ in range(trainable)) if trainable else None
        self.project = nn.Linear(backbone.hidden_size, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        states = self.backbone(ids, self.depth, self.top)  # (B, T, H)
        if not self.sentence:
            return self.drop(self.norm(self.project(states)))
        m = (ids != 0).unsqueeze(-1).to(states.dtype)
        sentence = F.normalize((states * m).sum(1) / m.sum(1).clamp(min=1), dim=-1) * states.shape[-1] ** 0.5  # (B, H)
        return self.drop(self.norm(self.project(states))), sentence  # (B, T, C), (B, H)


class Encoder(nn.Module):
    """ids (B, T) → token states (B, T, C) and a pooled vector (B, C)."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        d_model: int,
        max_len: int,
        layers: list[LayerSpec],
        dropout: float = 0.1,
        embed: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.embed = embed if embed is not None else TokenEmbedding(vocab_size, embedding_dim, d_model, max_len, dropout)
        self.cells = nn.ModuleList(Cell(d_model, spec, dropout) for spec in layers)
        self.norm = nn.LayerNorm(d_model)
        self.pool = SelfAttentionPooling(d_model)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token states (B, T, C), the pooled vector (B, C) — or (B, C + H) with the pre-trained
        sentence vector appended when the tower starts from pre-trained layers — and the mask."""
        mask = ids != 0  # (B, T), True on real tokens
        h, sentence = self.embed(ids), None
        if isinstance(h, tuple):
            h, sentence = h
        h = h * mask.unsqueeze(-1)
        for cell in self.cells:
            h = cell(h, mask)
        h = self.norm(h) * mask.unsqueeze(-1)  # (B, T, C)
        vector = self.pool(h, mask)
        return h, vector if sentence is None else torch.cat([vector, sentence], dim=-1), mask
