"""Encoders and the two-tower network: padding never changes an encoding; towers share a frozen table."""

from __future__ import annotations

import pytest
import torch

from defectnas.config import LayerSpec, ModelConfig
from defectnas.model import DefectNet, Encoder, FFNS, MIXERS
from defectnas.storage import load_tensors, save_tensors

D, V = 16, 40


def _ids(rows: list[list[int]], length: int) -> torch.Tensor:
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


ROWS = [[5, 9, 3], [7], [4, 4, 8, 11, 2]]
SPECS = [LayerSpec(mixer=m, ffn=f, heads=4, ratio=2) for m in MIXERS.names() for f in FFNS.names()]


@pytest.mark.parametrize("spec", SPECS, ids=[f"{s.mixer}-{s.ffn}" for s in SPECS])
def test_trailing_padding_does_not_change_the_encoding(spec):
    torch.manual_seed(0)
    enc = Encoder(V, D, D, max_len=12, layers=[spec, spec], dropout=0.1).eval()
    short, long = _ids(ROWS, 5), _ids(ROWS, 12)
    h_short, v_short, m_short = enc(short)
    h_long, v_long, m_long = enc(long)
    assert h_short.shape == (3, 5, D) and v_short.shape == (3, D) and h_long.shape == (3, 12, D)
    assert torch.allclose(v_short, v_long, atol=1e-5)
    assert torch.allclose(h_short[m_short], h_long[:, :5][m_short], atol=1e-5)
    assert torch.count_nonzero(h_long[~m_long]) == 0


def test_encoding_of_a_row_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    enc = Encoder(V, D, D, max_len=8, layers=[LayerSpec(), LayerSpec(ffn="sepconv3")]).eval()
    batch = _ids(ROWS, 6)
    _, vectors, _ = enc(batch)
    for i in range(len(ROWS)):
        _, alone, _ = enc(batch[i : i + 1])
        assert torch.allclose(vectors[i], alone[0], atol=1e-5)


def test_different_tokens_give_different_vectors():
    torch.manual_seed(0)
    enc = Encoder(V, D, D, max_len=8, layers=[LayerSpec()]).eval()
    _, v, _ = enc(_ids([[5, 9], [9, 5], [6, 9]], 4))
    assert not torch.allclose(v[0], v[2])
    assert not torch.allclose(v[0], v[1])  # positions matter


def _cfg(**kw) -> ModelConfig:
    base = dict(d_model=D, query_layers=[{}], title_layers=[{}, {}], vocab_size=V, embedding_init="trained",
                backbone_layers=0, query_backbone_layers=0, matching=False, dense_hidden=16, perspectives=2, query_max_len=6, title_max_len=8, dropout=0.1)
    return ModelConfig(**{**base, **kw})


def test_defectnet_forward_equals_the_two_tower_split():
    torch.manual_seed(0)
    net = DefectNet(_cfg()).eval()
    q, t = _ids(ROWS, 6), _ids([[1, 2, 3], [8, 8], [30]], 8)
    logits = net(q, t)
    assert logits.shape == (3,)
    # titles encoded once (e.g. cached), then scored against a query: same logits
    assert torch.allclose(net.score(net.encode_query(q), net.encode_title(t)), logits, atol=1e-6)
    # padding the title side further (up to max_len) changes nothing
    assert torch.allclose(net(q, _ids([[1, 2, 3], [8, 8], [30]], 4)), logits, atol=1e-5)


@pytest.mark.parametrize("matching", [False, True])
def test_defectnet_gradients_reach_both_towers(matching):
    torch.manual_seed(0)
    net = DefectNet(_cfg(matching=matching))
    net(_ids(ROWS, 6), _ids(ROWS, 8)).sum().backward()
    for name in ("query_encoder.embed.tokens.weight", "title_encoder.embed.tokens.weight", "head.0.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    if matching:
        assert net.matching.weight.grad.abs().sum() > 0


def test_matching_layer_adds_parameters_and_features():
    torch.manual_seed(0)
    plain, matched = DefectNet(_cfg()), DefectNet(_cfg(matching=True, perspectives=3))
    assert matched.matching is not None and plain.matching is None
    assert matched.matching.out_features == 12
    assert matched.num_parameters() > plain.num_parameters()
    assert matched.head[0].in_features == plain.head[0].in_features + 12
    out = matched.eval()(_ids(ROWS, 6), _ids(ROWS, 8))
    assert out.shape == (3,) and torch.isfinite(out).all()


def test_vocab_size_must_be_set():
    with pytest.raises(ValueError, match="vocab_size"):
        DefectNet(_cfg(vocab_size=0))


def test_trained_embeddings_are_separate_and_trainable():
    net = DefectNet(_cfg())
    q, t = net.query_encoder.embed.tokens, net.title_encoder.embed.tokens
    assert q is not t and q.weight.requires_grad and t.weight.requires_grad
    assert net.num_parameters(trainable_only=True) == net.num_parameters()


def test_frozen_pretrained_table_is_shared_by_both_towers():
    """embedding_init="minilm" + freeze: one (vocab, dim) table, no gradient, each tower projects it."""
    torch.manual_seed(0)
    net = DefectNet(_cfg(embedding_init="minilm", freeze_embeddings=True, embedding_dim=24))
    q_embed, t_embed = net.query_encoder.embed, net.title_encoder.embed
    assert q_embed.tokens is t_embed.tokens
    assert q_embed.tokens.weight.shape == (V, 24) and not q_embed.tokens.weight.requires_grad
    assert q_embed.project is not t_embed.project and q_embed.project.weight.shape == (D, 24)
    assert q_embed.project.weight.requires_grad
    assert net.num_parameters() - net.num_parameters(trainable_only=True) == V * 24  # counted once

    table = torch.randn(V, 24)
    net.set_word_embeddings(table)
    assert torch.equal(q_embed.tokens.weight, table) and torch.equal(t_embed.tokens.weight, table)

    # a training step moves the projections but never the frozen table
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net(_ids(ROWS, 6), _ids(ROWS, 8)).sum().backward()
    opt.step()
    after = net.state_dict()
    assert torch.equal(after["query_encoder.embed.tokens.weight"], table)
    assert not torch.equal(after["query_encoder.embed.project.weight"], before["query_encoder.embed.project.weight"])


def test_shared_table_is_saved_once_and_reloads_shared(tmp_path):
    torch.manual_seed(0)
    net = DefectNet(_cfg(embedding_init="minilm", freeze_embeddings=True, embedding_dim=24, vocab_size=4000))
    save_tensors(tmp_path / "w.safetensors", net.state_dict())
    table_bytes = 4000 * 24 * 4
    size = (tmp_path / "w.safetensors").stat().st_size
    assert table_bytes < size < 2 * table_bytes  # stored once, not twice
    tensors, _ = load_tensors(tmp_path / "w.safetensors")
    assert tensors["query_encoder.embed.tokens.weight"] is tensors["title_encoder.embed.tokens.weight"]
    fresh = DefectNet(_cfg(embedding_init="minilm", freeze_embeddings=True, embedding_dim=24, vocab_size=4000))
    fresh.load_state_dict(tensors)
    assert fresh.query_encoder.embed.tokens is fresh.title_encoder.embed.tokens
    ids = _ids(ROWS, 6)
    assert torch.allclose(fresh.eval()(ids, ids), net.eval()(ids, ids))


def test_unfrozen_pretrained_tables_are_separate():
    net = DefectNet(_cfg(embedding_init="minilm", freeze_embeddings=False, embedding_dim=24))
    assert net.query_encoder.embed.tokens is not net.title_encoder.embed.tokens
    assert net.query_encoder.embed.tokens.weight.requires_grad


@pytest.mark.parametrize("kind", ["pooled", "matching", "late", "matching+late", "coattention"])
def test_one_query_scoring_equals_the_query_repeated(kind):
    """What serve computes (1 query × N cached titles) equals score() on the query repeated N times."""
    torch.manual_seed(0)
    extra = {"matching": {"matching": True, "perspectives": 3}, "late": {"late_interaction": True, "perspectives": 2},
             "matching+late": {"matching": True, "late_interaction": True, "perspectives": 3},
             "coattention": {"interaction": "coattention"}}.get(kind, {})
    net = DefectNet(_cfg(**extra)).eval()
    titles = net.encode_title(_ids([[1, 2, 3], [8, 8], [30], [4, 5, 6, 7, 9, 10], [2]], 8))
    with torch.no_grad():
        for row in ROWS:
            q = net.encode_query(_ids([row], 6)[:, : len(row)])  # unpadded, as serve encodes it
            n = titles.vector.shape[0]
            repeated = net.score(type(q)(q.tokens.expand(n, -1, -1), q.vector.expand(n, -1), q.mask.expand(n, -1)), titles)
            torch.testing.assert_close(net.score_one_query(q, titles), repeated, atol=2e-6, rtol=1e-5)
