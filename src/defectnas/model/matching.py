"""Multi-perspective matching (after BiMPM): cosine matches under learned perspectives.

Why: pooled vectors blur which words matched. Matching every title token against the pooled
query (and every query token against the pooled title) under several learned re-weightings of
the dimensions keeps a word-level signal ("case" in the title vs. "iphone" in the query) at the
cost of a few features. It is the "-ml" of dl-rl-ml.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiPerspectiveMatching(nn.Module):
    """Features (B, 4·P): max and mean over tokens of per-perspective cosine matches, both directions."""

    def __init__(self, d_model: int, perspectives: int = 8) -> None:
        super().__init__()
        self.perspectives = perspectives
        self.weight = nn.Parameter(torch.rand(perspectives, d_model) * 0.5 + 0.75)  # (P, C), near 1

    def _match(self, tokens: torch.Tensor, mask: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        w = self.weight[None, None]  # (1, 1, P, C)
        a = tokens.unsqueeze(2) * w  # (B, T, P, C)
        b = (vector[:, None, None, :] * w)  # (B, 1, P, C)
        cos = F.cosine_similarity(a, b, dim=-1, eps=1e-6)  # (B, T, P)
        m = mask.unsqueeze(-1)
        best = cos.masked_fill(~m, -1.0).max(dim=1).values  # (B, P)
        mean = (cos * m).sum(1) / m.sum(1).clamp(min=1)  # (B, P)
        return torch.cat([best, mean], dim=-1)  # (B, 2P)

    def forward(self, q_tokens, q_mask, q_vec, t_tokens, t_mask, t_vec) -> torch.Tensor:
        return torch.cat([self._match(t_tokens, t_mask, q_vec), self._match(q_tokens, q_mask, t_vec)], dim=-1)

    @property
    def out_features(self) -> int:
        return 4 * self.perspectives
