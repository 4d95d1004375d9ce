"""The op registry: every op keeps (B, T, C), ignores padded positions, and typos fail helpfully."""

from __future__ import annotations

import pytest
import torch

from defectnas.config import LayerSpec
from defectnas.errors import ConfigError
from defectnas.model import FFNS, MIXERS, Cell
from defectnas.model.registry import Registry

D = 16
ALL_OPS = [(MIXERS, name) for name in MIXERS.names()] + [(FFNS, name) for name in FFNS.names()]


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 7, D, generator=g)  # (B, T, C)
    lengths = torch.tensor([7, 4, 1])
    mask = torch.arange(7)[None, :] < lengths[:, None]  # (B, T)
    return x, mask


def test_registries_hold_the_documented_ops():
    assert {"attention", "glu"} <= set(MIXERS.names())
    assert {"ffn", "conv1x1", "sepconv3", "sepconv5"} <= set(FFNS.names())
    assert "attention" in MIXERS and "bogus" not in MIXERS


@pytest.mark.parametrize("registry,name", ALL_OPS, ids=[n for _, n in ALL_OPS])
def test_op_maps_btc_to_btc(registry, name):
    torch.manual_seed(0)
    op = registry.create(name, D, heads=4, ratio=2, dropout=0.0)
    x, mask = _batch()
    y = op(x, mask)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert getattr(type(op), "op_name") == name


@pytest.mark.parametrize("registry,name", ALL_OPS, ids=[n for _, n in ALL_OPS])
def test_op_output_at_real_tokens_ignores_padded_inputs(registry, name):
    torch.manual_seed(0)
    op = registry.create(name, D, heads=4, ratio=2, dropout=0.0).eval()
    x, mask = _batch()
    garbage = x.clone()
    garbage[~mask] = 100.0 * torch.randn(int((~mask).sum()), D)
    y, y_garbage = op(x, mask), op(garbage, mask)
    assert torch.allclose(y[mask], y_garbage[mask], atol=1e-5)


def test_mixing_ops_do_mix_tokens():
    """Attention and separable convs see neighbours (so the padding test above is not vacuous)."""
    torch.manual_seed(0)
    x, mask = _batch()
    mask = torch.ones_like(mask)
    changed = x.clone()
    changed[:, 1] += 1.0
    for registry, name in ((MIXERS, "attention"), (FFNS, "sepconv3"), (FFNS, "sepconv5")):
        op = registry.create(name, D, heads=4, ratio=2, dropout=0.0).eval()
        assert not torch.allclose(op(x, mask)[:, 0], op(changed, mask)[:, 0]), name


def test_unknown_op_names_fail_listing_valid_names():
    with pytest.raises(ConfigError) as info:
        Cell(D, LayerSpec(mixer="atention"))
    message = str(info.value)
    assert "atention" in message and all(name in message for name in MIXERS.names())

    with pytest.raises(ConfigError) as info:
        Cell(D, LayerSpec(ffn="sepconv7"))
    assert "sepconv7" in str(info.value) and all(name in str(info.value) for name in FFNS.names())


def test_registry_refuses_a_duplicate_name_and_records_it():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        def __init__(self, d):
            self.d = d

    assert reg.create("a", 3).d == 3 and reg.names() == ["a"]
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(type("B", (), {}))


def test_attention_needs_heads_to_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        MIXERS.create("attention", D, heads=3)


@pytest.mark.parametrize("mixer", MIXERS.names())
@pytest.mark.parametrize("ffn", FFNS.names())
def test_cell_keeps_padded_positions_at_zero(mixer, ffn):
    torch.manual_seed(0)
    cell = Cell(D, LayerSpec(mixer=mixer, ffn=ffn, heads=2, ratio=2), dropout=0.0).eval()
    x, mask = _batch()
    x = x * mask.unsqueeze(-1)  # padded positions enter as zeros, as the encoder gives them
    y = cell(x, mask)
    assert y.shape == x.shape
    assert torch.count_nonzero(y[~mask]) == 0
    assert not torch.allclose(y[mask], x[mask])  # the residual branch did something
