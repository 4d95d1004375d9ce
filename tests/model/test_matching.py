"""Multi-perspective matching: the matrix-product form (no autograd) equals the broadcast form."""

from __future__ import annotations

import torch

from defectnas.model.matching import MultiPerspectiveMatching


def test_inference_form_equals_the_training_form():
    torch.manual_seed(0)
    m = MultiPerspectiveMatching(16, perspectives=4)
    q_tokens, t_tokens = torch.randn(7, 5, 16), torch.randn(7, 9, 16)
    q_mask = torch.arange(5)[None] < torch.tensor([1, 2, 3, 4, 5, 5, 3])[:, None]
    t_mask = torch.arange(9)[None] < torch.tensor([9, 1, 4, 6, 2, 8, 9])[:, None]
    q_vec, t_vec = torch.randn(7, 16), torch.randn(7, 16)
    t_tokens[0, 3] = 0.0  # a zero vector: the eps clamp decides its cosine in both forms
    t_tokens[1:, 1:] *= t_mask[1:, 1:, None]  # padding is zero, as the encoders leave it
    args = (q_tokens, q_mask, q_vec, t_tokens, t_mask, t_vec)
    trained = m(*args)  # autograd on: the broadcast form
    assert trained.requires_grad
    with torch.no_grad():
        served = m(*args)
    torch.testing.assert_close(served, trained.detach(), atol=1e-6, rtol=1e-5)
    assert served.shape == (7, 4 * 4)


def test_one_query_form_equals_the_query_repeated():
    torch.manual_seed(1)
    m = MultiPerspectiveMatching(16, perspectives=4)
    q_tokens, q_mask, q_vec = torch.randn(5, 16), torch.tensor([True, True, True, False, False]), torch.randn(16)
    t_tokens, t_vec = torch.randn(6, 9, 16), torch.randn(6, 16)
    t_mask = torch.arange(9)[None] < torch.tensor([9, 1, 4, 6, 2, 8])[:, None]
    t_tokens *= t_mask[..., None]
    t_tokens[2, 1] = 0.0  # a zero vector inside the mask: the eps clamp decides its cosine in both forms
    with torch.no_grad():
        repeated = m(q_tokens.expand(6, -1, -1), q_mask.expand(6, -1), q_vec.expand(6, -1), t_tokens, t_mask, t_vec)
        one = m.one_query(q_tokens, q_mask, q_vec, t_tokens, t_mask, t_vec)
    torch.testing.assert_close(one, repeated, atol=1e-6, rtol=1e-5)
    assert one.shape == (6, 16)
