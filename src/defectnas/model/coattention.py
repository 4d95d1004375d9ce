"""Word-by-word co-attention between the query and title encodings (the co-attention baseline).

Why: the two-tower model compares one pooled vector per side, so which query word a title word
answers is lost. Co-attention (as in decomposable attention / ESIM) aligns every query token with
a soft mixture of title tokens and vice versa, compares each token with its aligned summary
(``[a, ã, a⊙ã, |a−ã|]`` through a small MLP) and pools the comparisons (max and mean). It costs
a (Tq × Tt) affinity matrix per pair, so the title side can still be encoded once and cached but
the head is heavier than the pooled interaction it replaces (``ModelConfig(interaction="coattention")``).
"""

from __future__ import annotations

import torch
from torch import nn


class CoAttention(nn.Module):
    """Features (B, 4·C): max- and mean-pooled token comparisons, query side then title side."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.affinity = nn.Linear(d_model, d_model, bias=False)  # bilinear affinity q W tᵀ
        self.compare = nn.Sequential(nn.Linear(4 * d_model, d_model), nn.GELU())
        self.d_model = d_model

    @staticmethod
    def _align(scores: torch.Tensor, key_mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(scores.masked_fill(~key_mask[:, None, :], float("-inf")), dim=-1)  # (B, Ta, Tb)
        return weights @ values  # (B, Ta, C)

    def _side(self, a: torch.Tensor, aligned: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.compare(torch.cat([a, aligned, a * aligned, (a - aligned).abs()], dim=-1))  # (B, T, C)
        m = mask.unsqueeze(-1)  # (B, T, 1)
        best = h.masked_fill(~m, float("-inf")).max(dim=1).values  # (B, C)
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1)  # (B, C)
        return torch.cat([best, mean], dim=-1)  # (B, 2C)

    def forward(self, q_tokens: torch.Tensor, q_mask: torch.Tensor, t_tokens: torch.Tensor, t_mask: torch.Tensor) -> torch.Tensor:
        scores = self.affinity(q_tokens) @ t_tokens.transpose(1, 2)  # (B, Tq, Tt)
        q_aligned = self._align(scores, t_mask, t_tokens)  # (B, Tq, C): title summary per query word
        t_aligned = self._align(scores.transpose(1, 2), q_mask, q_tokens)  # (B, Tt, C): query summary per title word
        return torch.cat([self._side(q_tokens, q_aligned, q_mask), self._side(t_tokens, t_aligned, t_mask)], dim=-1)

    @property
    def out_features(self) -> int:
        return 4 * self.d_model
