"""Multi-perspective matching (after BiMPM): cosine matches under learned perspectives.

Why: pooled vectors blur which words matched. Matching every title token against the pooled
query (and every query token against the pooled title) under several learned re-weightings of
the dimensions keeps a word-level signal ("case" in the title vs. "iphone" in the query) at the
cost of a few features. It is the "-ml" of dl-rl-ml.

Without autograd (prediction, serving, ONNX export) the cosines are computed as matrix
products (:meth:`MultiPerspectiveMatching._cosines`), which is exact up to float rounding and
several times cheaper; training keeps the broadcast form, so trained models are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


EPS = 1e-6  # smallest norm a cosine divides by


def _weighted_norms(x: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """‖x ⊙ w_p‖ for every row x of ``x`` (…, C) and perspective p of ``w2`` = w² (P, C): (…, P),
    as a matrix product with w², clamped at EPS before the root as F.cosine_similarity clamps."""
    return (x.square() @ w2.T).clamp_min(EPS * EPS).sqrt()


class MultiPerspectiveMatching(nn.Module):
    """Features (B, 4·P): max and mean over tokens of per-perspective cosine matches, both directions."""

    def __init__(self, d_model: int, perspectives: int = 8) -> None:
        super().__init__()
        self.perspectives = perspectives
        self.weight = nn.Parameter(torch.rand(perspectives, d_model) * 0.5 + 0.75)  # (P, C), near 1

    def _match(self, tokens: torch.Tensor, mask: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: the broadcast form, as the models were trained
            w = self.weight[None, None]  # (1, 1, P, C)
            a = tokens.unsqueeze(2) * w  # (B, T, P, C)
            b = (vector[:, None, None, :] * w)  # (B, 1, P, C)
            cos = F.cosine_similarity(a, b, dim=-1, eps=EPS)  # (B, T, P)
        else:
            cos = self._cosines(tokens, vector)
        return self._pool(cos, mask.unsqueeze(-1), dim=1)  # (B, 2P)

    def _cosines(self, tokens: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """cos(x ⊙ w_p, v ⊙ w_p) = Σ_c x_c v_c w_pc² / (‖x ⊙ w_p‖ · ‖v ⊙ w_p‖) for every token x and
        perspective p, each sum over C a matrix product with w² (P, C): (B, T, P) without the
        (B, T, P, C) tensor of the broadcast form (on a request of 1 query × 100 cached titles the
        default model's whole head, matching included, costs about a third: benchmarks/serving.py). Norms are clamped at EPS as in F.cosine_similarity;
        equal to the broadcast form up to float rounding (tests/model check it)."""
        w2 = self.weight.square()  # (P, C)
        num = torch.bmm(tokens, (vector[:, None, :] * w2[None]).transpose(1, 2))  # (B, T, P)
        return num / (_weighted_norms(tokens, w2) * _weighted_norms(vector, w2)[:, None, :])  # (B, T, P) / (B, 1, P)

    def forward(self, q_tokens, q_mask, q_vec, t_tokens, t_mask, t_vec) -> torch.Tensor:
        return torch.cat([self._match(t_tokens, t_mask, q_vec), self._match(q_tokens, q_mask, t_vec)], dim=-1)

    def one_query(self, q_tokens, q_mask, q_vec, t_tokens, t_mask, t_vec) -> torch.Tensor:
        """:meth:`forward` for one query against N titles, without repeating the query N times:
        ``q_tokens`` (Tq, C), ``q_mask`` (Tq,), ``q_vec`` (C,); titles as in forward (N, ·).
        Returns (N, 4P), equal to ``forward`` on the query expanded to N rows up to float rounding
        (tests/model check it). Why: a served request is one query against N cached titles, and
        the batched form computes every query-side quantity N times, as batched matrix products
        of N small ones; here the title tokens meet the query in one matrix product."""
        w2 = self.weight.square()  # (P, C)
        # each title token against the query's vector: (N, T, P); the query's norms divide the
        # (C, P) matrix once instead of every (N, T, P) entry
        num = t_tokens @ ((q_vec * w2) / _weighted_norms(q_vec, w2)[:, None]).T
        titles = self._pool(num / _weighted_norms(t_tokens, w2), t_mask.unsqueeze(-1), dim=1)  # (N, 2P)
        # each query token against each title's vector: (N, P, Tq)
        num = (t_vec[:, None, :] * w2[None]) @ q_tokens.T
        norms = _weighted_norms(q_tokens, w2).T[None] * _weighted_norms(t_vec, w2)[:, :, None]  # (1, P, Tq) × (N, P, 1)
        query = self._pool(num / norms, q_mask[None, None, :], dim=2)  # (N, 2P)
        return torch.cat([titles, query], dim=-1)

    @staticmethod
    def _pool(cos: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
        """[max, mean] over the unmasked entries of ``dim`` (masked entries count as −1 in the max
        and 0 in the mean): (N, 2P). The max reads ``cos·m + (m − 1)``, which is ``cos`` where m
        is 1 and exactly −1 where it is 0 (cosines are finite: norms are clamped): the same values
        as a masked fill, but two broadcast products instead of a broadcast select, which
        onnxruntime runs ~5× slower (the head's costliest node on a served request)."""
        m = mask.to(cos.dtype)
        masked = cos * m
        best = (masked + (m - 1)).max(dim=dim).values
        mean = masked.sum(dim) / m.sum(dim).clamp(min=1)
        return torch.cat([best, mean], dim=-1)

    @property
    def out_features(self) -> int:
        return 4 * self.perspectives
