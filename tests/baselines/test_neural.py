"""lstm and coattention: the same DefectClassifier with another encoder / interaction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from defectnas import DefectClassifier
from defectnas.baselines import coattention_classifier, load_model, lstm_classifier
from defectnas.config import ModelConfig
from defectnas.errors import ConfigError
from defectnas.model import DefectNet
from defectnas.model.coattention import CoAttention
from defectnas.model.lstm import LSTMEncoder


def test_defaults_unchanged():
    cfg = ModelConfig(vocab_size=50, embedding_init="trained", d_model=16, query_layers=[{}], title_layers=[{}], matching=False)
    assert cfg.encoder == "transformer" and cfg.interaction == "pooled"
    net = DefectNet(cfg)
    assert not any(k.startswith("coattention") or ".lstm." in k for k in net.state_dict())
    assert not net.needs_title_tokens
    assert DefectNet(ModelConfig(**{**cfg.__dict__, "interaction": "coattention"})).needs_title_tokens  # a cache must keep tokens
    with pytest.raises(ConfigError, match="encoder must be one of"):
        ModelConfig(encoder="gru")


def test_lstm_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = LSTMEncoder(30, 8, 8, 10, num_layers=1, dropout=0.0).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0]])
    tokens, pooled, mask = enc(ids)
    tokens2, pooled2, _ = enc(ids[:, :3])
    assert tokens.shape == (1, 6, 8) and mask.tolist() == [[True] * 3 + [False] * 3]
    torch.testing.assert_close(pooled, pooled2)
    torch.testing.assert_close(tokens[:, :3], tokens2)
    assert tokens[:, 3:].abs().sum() == 0


def test_coattention_ignores_padding():
    torch.manual_seed(0)
    co = CoAttention(8)
    q, t = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    qm, tm = torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)
    out = co(q, qm, t, tm)
    padded_t = torch.cat([t, torch.zeros(1, 2, 8)], dim=1)
    padded_m = torch.cat([tm, torch.zeros(1, 2, dtype=torch.bool)], dim=1)
    assert out.shape == (1, co.out_features)
    torch.testing.assert_close(co(q, qm, padded_t, padded_m), out)


@pytest.mark.parametrize("factory,field,value", [(lstm_classifier, "encoder", "lstm"), (coattention_classifier, "interaction", "coattention")])
def test_fit_predict_save_load(factory, field, value, synthetic_split, tiny_options, tmp_path):
    clf = factory(**{**tiny_options, "epochs": 1, "variant": "dl-jl"}).fit(synthetic_split["train"], synthetic_split["valid"])
    assert isinstance(clf, DefectClassifier) and getattr(clf.model_config_, field) == value
    test = synthetic_split["test"]
    p = clf.predict_proba(test)
    assert p.shape == (len(test),) and np.isfinite(p).all()
    clf.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model"][field] == value
    for again in (DefectClassifier.load(tmp_path), load_model(tmp_path)):
        np.testing.assert_allclose(again.predict_proba(test), p, rtol=1e-5, atol=1e-6)
