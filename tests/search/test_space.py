"""The search space: read off the op registry, JSON genotypes, encode/decode, canonical form."""

from __future__ import annotations

import json

import pytest
import torch

from defectnas import DefectClassifier
from defectnas.errors import ConfigError
from defectnas.model.ops import FFNS, MIXERS
from defectnas.search.space import SearchSpace, arch_key, describe


def test_space_matches_issue_and_registry():
    space = SearchSpace()
    assert space.num_layers == 5
    assert space.mixer_options == (("attention", 1), ("attention", 4), ("attention", 8), ("glu", 1))
    assert set(space.ffns) == set(FFNS.names()) == {"ffn", "conv1x1", "sepconv3", "sepconv5"}
    assert set(space.mixers) == set(MIXERS.names())
    assert space.ratios == (4, 8, 16)
    assert [d.kind for d in space.decisions[:3]] == ["mixer", "ffn", "ratio"] and len(space.decisions) == 15
    assert space.size() == (4 * 4 * 3) ** 5
    assert space.min_d_model_multiple() == 8


def test_decode_encode_round_trip_and_json():
    space = SearchSpace()
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        arch = space.sample_uniform(g)
        assert space.decode(space.encode(arch)) == arch
        assert json.loads(json.dumps(arch)) == arch  # plain JSON
        assert all(set(layer) == {"mixer", "heads", "ffn", "ratio"} for layer in arch)


def test_canonical_gives_glu_one_head_and_one_key():
    space = SearchSpace(num_layers=1)
    a = space.canonical([{"mixer": "glu", "heads": 8, "ffn": "ffn", "ratio": 4}])
    b = space.canonical([{"mixer": "glu", "ffn": "ffn", "ratio": 4}])
    assert a == b == [{"mixer": "glu", "heads": 1, "ffn": "ffn", "ratio": 4}]
    assert arch_key(a) == arch_key(b)
    assert describe(a) == "glu/ffn×4"


def test_unknown_op_or_value_fails_with_valid_names():
    with pytest.raises(ConfigError, match="valid: attention, glu"):
        SearchSpace(mixers=("attention", "lstm"))
    space = SearchSpace(num_layers=1)
    with pytest.raises(ConfigError, match="ratio 5 is not in the search space"):
        space.encode([{"mixer": "glu", "heads": 1, "ffn": "ffn", "ratio": 5}])
    with pytest.raises(ConfigError, match="expected 1 layers"):
        space.encode([])


def test_same_builder_makes_children_and_final_models():
    """An architecture goes straight into DefectClassifier(title_layers=...)."""
    arch = SearchSpace(num_layers=2).sample_uniform(torch.Generator().manual_seed(0))
    clf = DefectClassifier(d_model=16, title_layers=arch)
    from defectnas.config import ModelConfig, split_options

    cfg = ModelConfig(**split_options(clf.options)[0])
    assert [vars(spec) for spec in cfg.title_layers] == arch
