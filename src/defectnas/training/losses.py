"""The losses: class-weighted cross-entropy and the triplet margin regularizer.

Why the triplet loss: cross-entropy alone only learns a boundary; the triplet term shapes the
encoders' space so that, for the same query, relevant products sit closer than defects by a
margin. It regularises small-data training and is what the ``dl-jl`` and ``transfer`` variants add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, defect_weight: float) -> torch.Tensor:
    """Binary cross-entropy with defects (label 1) weighted ``defect_weight`` times."""
    weights = torch.where(labels > 0.5, defect_weight, 1.0)
    return F.binary_cross_entropy_with_logits(logits, labels.float(), weight=weights)


def distillation_loss(logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's logits against a teacher's defect probabilities (soft targets).

    Why: a fine-tuned cross-encoder has seen each query word next to each title word; its graded
    probabilities carry more than the 0/1 labels (how wrong a product is), which a small
    two-tower student can learn from. Smallest when the student's probability equals the teacher's.
    """
    return F.binary_cross_entropy_with_logits(logits, teacher_probs.float())


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-6)


def triplet_loss(query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(max(0, d(q, relevant) − d(q, defect) + margin)) with cosine distance d.

    Falls when relevant products move towards the query or defects move away.
    """
    return F.relu(cosine_distance(query, positive) - cosine_distance(query, negative) + margin).mean()
