"""Late interaction: every query token against every title token (after ColBERT's MaxSim).

Why: the pooled vectors and the matching layer compare a token with the *other side's pooled
vector*, so "is each query word in this title?" is only seen through a blur. A defect is often
exactly one query word the title lacks ("iphone x case" → a case for the Xs) or one title word
the query never asked for ("case"). Late interaction (Khattab & Zaharia 2020, "ColBERT") scores
each query token by its best-matching title token; here, under P learned perspectives (as in
the matching layer), and pooled both ways by the mean (how much matches) and the min (the worst
matched word). It reads only the towers' token states, so titles stay cacheable and a request
costs one (Tq × T) cosine matrix per product and perspective.
"""

from __future__ import annotations

import torch
from torch import nn

from .matching import _weighted_norms


class LateInteraction(nn.Module):
    """Features (B, 4·P): for each perspective, the mean and min over query tokens of their best
    cosine with a title token, and the same from the title's side. Inputs are the towers' token
    states (B, T, C) and masks (B, T) (True on real tokens).

    cos(x ⊙ w_p, y ⊙ w_p) = Σ_c x_c y_c w_pc² / (‖x ⊙ w_p‖ ‖y ⊙ w_p‖), so all cosines of a pair are
    one matrix product of the query's tokens, scaled by w_p² and divided by their norms
    (P·Tq, C), with the title's tokens (C, T), then divided by the title tokens' norms (P, T) —
    the (P, T, C) tensor of per-perspective tokens is never built. Padding is set to −3 (below
    any cosine) in the same pass, so it never wins a max."""

    def __init__(self, d_model: int, perspectives: int = 8) -> None:
        super().__init__()
        self.perspectives = perspectives
        self.weight = nn.Parameter(torch.rand(perspectives, d_model) * 0.5 + 0.75)  # (P, C), near 1

    def _query_side(self, q_tokens: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        """(…, Tq, C) → (…, P·Tq, C): each query token scaled by w_p² and divided by ‖x ⊙ w_p‖."""
        scaled = q_tokens.unsqueeze(-3) * w2[:, None, :] / _weighted_norms(q_tokens, w2).transpose(-1, -2).unsqueeze(-1)  # (…, P, Tq, C)
        return scaled.flatten(-3, -2)

    def forward(self, q_tokens: torch.Tensor, q_mask: torch.Tensor, t_tokens: torch.Tensor, t_mask: torch.Tensor) -> torch.Tensor:
        w2 = self.weight.square()  # (P, C)
        (b, tq), p = q_mask.shape, w2.shape[0]
        num = torch.bmm(self._query_side(q_tokens, w2), t_tokens.transpose(1, 2)).view(b, p, tq, -1)  # (B, P, Tq, T)
        pad = (~t_mask).to(num.dtype)[:, None, None, :] + (~q_mask).to(num.dtype)[:, None, :, None]  # (B, 1, Tq, T)
        sim = torch.addcmul(-3 * pad, num, _weighted_norms(t_tokens, w2).reciprocal().transpose(1, 2).unsqueeze(2))  # (B, P, Tq, T)
        return _features(sim.amax(-1), sim.amax(-2), q_mask, t_mask)

    def one_query(self, q_tokens: torch.Tensor, q_mask: torch.Tensor, t_tokens: torch.Tensor, t_mask: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for one query (Tq, C), (Tq,) against N titles (N, T, C), (N, T): (N, 4P),
        equal up to float rounding (tests/model check it). Why: a served request is one query
        against N cached titles; here the query side is computed once and all N·T title tokens
        meet it in one (P·Tq, C) × (C, N·T) product, laid out (P, Tq, N, T) so that every
        broadcast runs along contiguous memory (a layout with Tq or P innermost is ~5× slower)."""
        w2 = self.weight.square()  # (P, C)
        (n, t), p, tq = t_mask.shape, w2.shape[0], q_mask.shape[0]
        num = (self._query_side(q_tokens, w2) @ t_tokens.reshape(n * t, -1).T).view(p, tq, n, t)  # (P, Tq, N, T)
        pad = (~t_mask).to(num.dtype)[None, None] + (~q_mask).to(num.dtype)[None, :, None, None]  # (1, Tq, N, T)
        sim = torch.addcmul(-3 * pad, num, _weighted_norms(t_tokens, w2).reciprocal().permute(2, 0, 1).contiguous().unsqueeze(1))  # (P, Tq, N, T)
        return _features(sim.amax(-1).permute(2, 0, 1), sim.amax(1).transpose(0, 1), q_mask.unsqueeze(0), t_mask)

    @property
    def out_features(self) -> int:
        return 4 * self.perspectives


def _features(q_best: torch.Tensor, t_best: torch.Tensor, q_mask: torch.Tensor, t_mask: torch.Tensor) -> torch.Tensor:
    """Each query token's best cosine q_best (B, P, Tq) and each title token's t_best (B, P, T),
    masks (B or 1, Tq), (B, T) → [mean, min] of each over its real tokens: (B, 4P)."""
    return torch.cat([_mean_min(q_best, q_mask[:, None, :]), _mean_min(t_best, t_mask[:, None, :])], dim=-1)


def _mean_min(best: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[mean, min] over the real tokens (``mask``, broadcastable to ``best``) of the last axis: (B, 2P)."""
    m = mask.to(best.dtype)
    mean = (best * m).sum(-1) / m.sum(-1).clamp(min=1)
    worst = (best + 2 * (1 - m)).amin(-1)  # padding reads 2, above any cosine
    return torch.cat([mean, worst], dim=-1)
