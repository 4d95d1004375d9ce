"""A bidirectional-LSTM text encoder: the recurrent baseline for the transformer towers.

Why: the comparison asks whether self-attention cells beat the classic recurrent encoder at the
same job. This encoder is a drop-in for :class:`~defectnas.model.encoder.Encoder` — same
constructor inputs, same ``(tokens, pooled, mask)`` output, same token embedding (so a
pre-trained table is shared and frozen the same way) and the same self-attention pooling — so
``ModelConfig(encoder="lstm")`` builds the same two-tower classifier with only the encoders
swapped, and saving/loading works unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .encoder import SelfAttentionPooling, TokenEmbedding


class LSTMEncoder(nn.Module):
    """ids (B, T) → BiLSTM token states (B, T, C) and a pooled vector (B, C)."""

    def __init__(self, vocab_size: int, embedding_dim: int, d_model: int, max_len: int, num_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"an LSTM encoder needs an even d_model (two directions), got {d_model}")
        self.embed = TokenEmbedding(vocab_size, embedding_dim, d_model, max_len, dropout)
        self.lstm = nn.LSTM(d_model, d_model // 2, num_layers=num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.norm = nn.LayerNorm(d_model)
        self.pool = SelfAttentionPooling(d_model)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = ids != 0  # (B, T), True on real tokens (right-padded, never an all-padding row)
        T = ids.shape[1]
        x = self.embed(ids)  # (B, T, C)
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)  # padding never enters the backward direction
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=T)  # (B, T, C)
        h = self.norm(h) * mask.unsqueeze(-1)
        return h, self.pool(h, mask), mask
