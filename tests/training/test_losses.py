"""The losses: the triplet term pulls relevant products in and pushes defects out; CE weights defects."""

from __future__ import annotations

import math

import pytest
import torch

from defectnas.training import triplet_loss, weighted_bce


def _vecs():
    q = torch.tensor([[1.0, 0.0, 0.0]])
    pos = torch.tensor([[0.2, 1.0, 0.3]])
    neg = torch.tensor([[0.5, 0.8, -0.2]])
    return q, pos, neg


def test_triplet_loss_falls_as_the_relevant_product_moves_to_the_query():
    q, pos, neg = _vecs()
    base = triplet_loss(q, pos, neg, margin=0.5)
    assert base > 0
    closer = pos + 0.5 * (q - pos)
    assert triplet_loss(q, closer, neg, margin=0.5) < base


def test_triplet_loss_rises_as_the_defect_moves_to_the_query():
    q, pos, neg = _vecs()
    base = triplet_loss(q, pos, neg, margin=0.5)
    closer = neg + 0.5 * (q - neg)
    assert triplet_loss(q, pos, closer, margin=0.5) > base


def test_triplet_loss_values_by_hand():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    aligned, orthogonal = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 3.0], [0.0, 3.0]])
    # cosine distances 0 (aligned) and 1 (orthogonal): hinge max(0, d+ - d- + margin)
    assert triplet_loss(q, aligned, orthogonal, margin=0.3).item() == pytest.approx(0.0)
    assert triplet_loss(q, orthogonal, aligned, margin=0.3).item() == pytest.approx(1.3)
    mixed_pos = torch.tensor([[0.0, 3.0], [2.0, 0.0]])
    mixed_neg = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert triplet_loss(q, mixed_pos, mixed_neg, margin=0.3).item() == pytest.approx(1.3 / 2)  # a mean


def test_triplet_gradient_pulls_positive_towards_query():
    q, pos, neg = _vecs()
    pos = pos.clone().requires_grad_(True)
    triplet_loss(q, pos, neg, margin=0.5).backward()
    step = pos - 0.1 * pos.grad  # one gradient-descent step
    cos = torch.nn.functional.cosine_similarity
    assert cos(step, q) > cos(pos, q)


def test_weighted_bce_costs_a_defect_error_defect_weight_times_a_relevant_error():
    wrong = torch.tensor([3.0])  # confident "defect"
    relevant_error = weighted_bce(wrong, torch.tensor([0]), defect_weight=7.0)
    defect_error = weighted_bce(-wrong, torch.tensor([1]), defect_weight=7.0)
    assert defect_error.item() == pytest.approx(7.0 * relevant_error.item(), rel=1e-6)
    assert relevant_error.item() == pytest.approx(math.log1p(math.exp(3.0)), rel=1e-6)


def test_weighted_bce_with_weight_one_is_plain_bce_and_accepts_int_labels():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0])
    labels = torch.tensor([1, 0, 0, 1])  # int64, as the trainer passes them
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    assert weighted_bce(logits, labels, 1.0).item() == pytest.approx(plain.item(), rel=1e-6)
    assert weighted_bce(logits, labels, 10.0) > weighted_bce(logits, labels, 1.0)
