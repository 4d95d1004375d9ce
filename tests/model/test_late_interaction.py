"""Late interaction (ColBERT-style MaxSim): what its features mean, and the served form."""

from __future__ import annotations

import torch

from defectnas.model.late_interaction import LateInteraction


def _unit_perspectives(li: LateInteraction) -> None:
    with torch.no_grad():
        li.weight.fill_(1.0)  # every perspective the plain cosine


def test_features_are_mean_and_min_of_each_tokens_best_match_and_ignore_padding():
    li = LateInteraction(3, perspectives=1)
    _unit_perspectives(li)
    e = torch.eye(3)
    # query tokens: a, b; title tokens: a, c, then padding that would match b perfectly if it counted
    q = torch.stack([e[0], e[1]])[None]  # (1, 2, 3)
    t = torch.stack([e[0], e[2], e[1]])[None]  # (1, 3, 3)
    q_mask, t_mask = torch.tensor([[True, True]]), torch.tensor([[True, True, False]])
    f = li(q, q_mask, t, t_mask)[0]
    # query side: a → 1, b → 0 (its match sits in padding); title side: a → 1, c → 0
    torch.testing.assert_close(f, torch.tensor([0.5, 0.0, 0.5, 0.0]))
    # the same title with the padding real: b now matches, the title's c still does not
    f = li(q, q_mask, t, torch.tensor([[True, True, True]]))[0]
    torch.testing.assert_close(f, torch.tensor([1.0, 1.0, 2 / 3, 0.0]))


def test_one_query_form_equals_the_query_repeated():
    torch.manual_seed(1)
    li = LateInteraction(16, perspectives=4)
    q_tokens, q_mask = torch.randn(5, 16), torch.tensor([True, True, True, False, False])
    t_tokens = torch.randn(6, 9, 16)
    t_mask = torch.arange(9)[None] < torch.tensor([9, 1, 4, 6, 2, 8])[:, None]
    t_tokens *= t_mask[..., None]
    with torch.no_grad():
        repeated = li(q_tokens.expand(6, -1, -1), q_mask.expand(6, -1), t_tokens, t_mask)
        one = li.one_query(q_tokens, q_mask, t_tokens, t_mask)
    torch.testing.assert_close(one, repeated, atol=1e-6, rtol=1e-5)
    assert one.shape == (6, 16)
