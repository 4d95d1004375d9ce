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


def test_spaces_are_registered_and_serving_is_the_default():
    from defectnas.search.config import SearchConfig
    from defectnas.search.space import SPACES, ServingSpace, make_space

    assert set(SPACES.names()) == {"seed", "serving"} and SearchConfig().space == "serving"
    assert isinstance(make_space("serving"), ServingSpace)
    with pytest.raises(ConfigError, match="valid: seed, serving"):
        make_space("nas-bench")


@pytest.mark.parametrize("space, options, message", [
    ("serving", {"no_such_option": [1]}, "--space-options: the serving space has no option 'no_such_option'; its options: query_layers, "),
    ("seed", {"query_layers": [2]}, "--space-options: the seed space has no option 'query_layers'; its options: "),
    ("serving", {"query_layers": 3}, "--space-options: query_layers takes a list of the values to search, e.g. [3]; got 3"),
    ("serving", {"matching": True}, "--space-options: matching takes a list of the values to search, e.g. [true]; got true"),
    ("serving", {"query_layers": ["a"]}, "not usable by the serving space"),
    ("serving", {"d_model": []}, "the serving space needs at least one option for d_model"),
])
def test_space_options_a_space_cannot_use_are_refused_in_one_line(space, options, message):
    """--space-options with an unknown key or a single value reached the space's constructor and
    ended in a TypeError traceback."""
    from defectnas.search.space import make_space

    with pytest.raises(ConfigError) as e:
        make_space(space, **options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_serving_space_decisions_round_trip_and_build_train_models():
    from defectnas.config import ModelConfig, split_options
    from defectnas.search.space import ServingSpace

    assert "late_interaction" not in [d.name for d in ServingSpace().decisions]  # searched only when asked
    space = ServingSpace(late_interaction=(False, True))
    names = [d.name for d in space.decisions[:9]]
    assert names == ["query_layers", "query_trainable", "query_max_len", "title_trainable", "d_model", "matching",
                     "sentence_vector", "late_interaction", "title_cells"]
    assert space.query_layers == (1, 2, 3, 4, 5, 6) and space.query_trainable == space.title_trainable == (0, 1, 2)
    assert space.d_model == (64, 128) and set(space.matching) == set(space.sentence_vector) == {True, False}
    assert space.decisions[8].options == (0, 1, 2, 3, 4, 5)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        arch = space.sample_uniform(g)
        assert space.decode(space.encode(arch)) == arch and json.loads(json.dumps(arch)) == arch
        assert arch["query_trainable"] <= arch["query_layers"]
        model, train = split_options(space.to_options(arch))  # one builder: plain DefectClassifier options
        cfg = ModelConfig(**model)
        assert cfg.query_backbone_layers == arch["query_layers"] and len(cfg.title_layers) == len(arch["title_cells"])
        assert cfg.late_interaction == arch.get("late_interaction", False) and arch.get("late_interaction", True)  # written only when on
        mutant = space.mutate(arch, g)
        assert space.canonical(mutant) == mutant
    # train's default, written in this space
    default = space.default_architecture()
    m = ModelConfig()
    assert default["query_layers"] == m.query_backbone_layers and default["matching"] == m.matching
    assert [ModelConfig(**split_options(space.to_options(default))[0]).title_layers[0]] == m.title_layers
    assert space.size() > 10**9


def test_a_space_saved_before_the_late_interaction_samples_keys_and_builds_as_it_did():
    """A search started before the late-interaction option existed resumes unchanged: its saved
    space has no such decision, its architectures (no "late_interaction" key) keep their keys and
    build models without it, and the controller samples the decisions it sampled; the default
    space samples exactly what it did before the option (the decision is only there when asked)."""
    from defectnas.search.space import ServingSpace, arch_key, space_from_dict

    new = ServingSpace(late_interaction=(False, True))
    saved = {k: v for k, v in new.to_dict().items() if k != "late_interaction"}  # what an older search.json holds
    old = space_from_dict(saved)
    assert old.late_interaction == (False,) and "late_interaction" not in [d.name for d in old.decisions]
    assert len(old.decisions) == len(new.decisions) - 1
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        arch = old.sample_uniform(g)
        assert "late_interaction" not in arch and old.decode(old.encode(arch)) == arch
        assert new.to_options(arch)["late_interaction"] is False
        assert arch_key(new.canonical(arch)) == arch_key(arch)  # the same architecture in the new space, the same key
    assert [d.name for d in ServingSpace().decisions] == [d.name for d in old.decisions]
    on = {**new.default_architecture(), "late_interaction": True}
    assert new.decode(new.encode(on)) == on and "+late" in new.describe(on) and new.to_options(on)["late_interaction"] is True


def test_inactive_cells_are_skipped_and_mutation_changes_one_decision():
    from defectnas.search.space import ServingSpace

    space = ServingSpace(late_interaction=(False, True))
    arch = {**space.default_architecture(), "title_cells": []}
    actions = space.encode(arch)
    assert actions[8] == 0 and all(a == -1 for a in actions[9:])  # no cells: their ops are not decided
    g = torch.Generator().manual_seed(1)
    base = space.encode(space.default_architecture())
    for _ in range(30):
        child = space.mutate(space.default_architecture(), g)
        changed = [i for i, (a, b) in enumerate(zip(base[:9], space.encode(child)[:9])) if a != b]
        assert len(changed) <= 1


def test_search_space_options_and_the_cpu_default(tmp_path):
    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import build_space

    assert build_space(SearchConfig()).title_trainable == (0,)  # CPU children: no title fine-tuning unless asked
    assert build_space(SearchConfig(space_options={"title_trainable": [0, 1, 2]})).title_trainable == (0, 1, 2)
    assert build_space(SearchConfig(options={"device": "cuda"})).title_trainable == (0, 1, 2)
    assert build_space(SearchConfig(space_options={"query_layers": [3, 6]})).query_layers == (3, 6)
    assert build_space(SearchConfig(space="seed", num_layers=2)).num_layers == 2
