"""One encoder layer built from a :class:`~defectnas.config.LayerSpec`.

Why a cell: the search varies each product-encoder layer independently, so a layer is a
pre-norm residual block whose mixer and feed-forward op are looked up by name. The same builder
makes search children and final models.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import LayerSpec
from .ops import FFNS, MIXERS


class Cell(nn.Module):
    """x + mixer(LN(x)), then x + ffn(LN(x)); padded positions are kept at zero."""

    def __init__(self, d_model: int, spec: LayerSpec, dropout: float = 0.1) -> None:
        super().__init__()
        self.spec = spec
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = MIXERS.create(spec.mixer, d_model, heads=spec.heads, ratio=spec.ratio, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FFNS.create(spec.ffn, d_model, heads=spec.heads, ratio=spec.ratio, dropout=dropout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        x = x + self.drop(self.mixer(self.norm1(x), mask)) * keep
        x = x + self.drop(self.ffn(self.norm2(x), mask)) * keep
        return x  # (B, T, C)
