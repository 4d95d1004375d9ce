"""The cell ops: token mixers and feed-forward blocks, each one decorated class.

Every op has the same contract, so the search can swap them freely:
``Op(d_model, *, heads, ratio, dropout)`` and ``forward(x, mask) -> y`` with x and y of shape
(B, T, C) and ``mask`` (B, T), True on real tokens. Dropout is applied by the cell around
each op, not inside it: on a CPU, dropout masks over the wide inner activations cost more time
than the matrix products. Ops never let padding leak into real
tokens: attention masks padded keys, convolutions see zeros at padded positions.
To add an op, write a class here and decorate it with ``@MIXERS.register(name)`` or
``@FFNS.register(name)``; the search space picks it up from the registry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

MIXERS = Registry("token mixer")
FFNS = Registry("feed-forward op")


@MIXERS.register("attention")
class Attention(nn.Module):
    """Multi-head self-attention over the real tokens."""

    def __init__(self, d_model: int, *, heads: int = 4, ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, C/H)
        attn_mask = mask[:, None, None, :]  # (B, 1, 1, T): attend to real keys only
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, C/H)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


@MIXERS.register("glu")
class GatedLinearUnit(nn.Module):
    """A gated linear unit in place of attention: cheaper, position-wise (convs can mix tokens)."""

    def __init__(self, d_model: int, *, heads: int = 4, ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(F.glu(self.proj(x), dim=-1))  # (B, T, C)


@FFNS.register("ffn")
class FeedForward(nn.Module):
    """The transformer's position-wise feed-forward block."""

    def __init__(self, d_model: int, *, heads: int = 4, ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, ratio * d_model)
        self.down = nn.Linear(ratio * d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class _ConvFFN(nn.Module):
    """Shared body of the convolutional feed-forward ops (kernel 1 or depthwise-separable k)."""

    kernel: int = 1

    def __init__(self, d_model: int, *, heads: int = 4, ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        k = self.kernel
        # depthwise conv over time (k > 1 only), then pointwise up / down projections
        self.depthwise = nn.Conv1d(d_model, d_model, k, padding=k // 2, groups=d_model) if k > 1 else None
        self.up = nn.Conv1d(d_model, ratio * d_model, 1)
        self.down = nn.Conv1d(ratio * d_model, d_model, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = (x * mask.unsqueeze(-1)).transpose(1, 2)  # (B, C, T), padding zeroed
        if self.depthwise is not None:
            h = self.depthwise(h)
        h = self.down(F.gelu(self.up(h)))  # (B, C, T)
        return h.transpose(1, 2)  # (B, T, C)


@FFNS.register("conv1x1")
class Conv1x1(_ConvFFN):
    """1×1 convolutions: the feed-forward block written as a conv (a separate op in the seed's space)."""

    kernel = 1


@FFNS.register("sepconv3")
class SepConv3(_ConvFFN):
    """3×1 depthwise-separable convolution: mixes each token with its neighbours."""

    kernel = 3


@FFNS.register("sepconv5")
class SepConv5(_ConvFFN):
    """5×1 depthwise-separable convolution: a wider local window."""

    kernel = 5
