"""Training options that change which weights are kept: ``ema_decay`` (the moving average of the weights is what is
validated and kept) and ``selection_metric`` (the validation score that picks the epoch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defectnas.config import TrainConfig
from defectnas.errors import ConfigError
from defectnas.storage import load_tensors
from defectnas.training import train
from defectnas.training.averaging import WeightAverage
from defectnas.training.trainer import CHECKPOINT

from .test_trainer import assert_same_weights, cfg, data, make_model, weights  # noqa: F401


def test_the_average_is_the_bias_corrected_ema_and_swapping_restores_the_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    net[1].bias.requires_grad_(False)  # frozen: not averaged
    avg = WeightAverage(net, decay=0.75)
    assert len(avg.names) == 3 and "1.bias" not in avg.names
    for a, p in zip(avg.average, avg.params):  # before any step: the weights themselves
        assert torch.equal(a, p)
    seen = []
    for step in range(1, 30):
        with torch.no_grad():
            for p in avg.params:
                p.add_(1.0)
        avg.update()
        seen.append([p.detach().clone() for p in avg.params])
        w = torch.tensor([0.75 ** (step - s) for s in range(1, step + 1)], dtype=torch.float64)
        for i, a in enumerate(avg.average):  # step s's weights weighted by decay^(t - s), normalised
            expected = sum(float(wi) * seen[s][i] for s, wi in enumerate(w)) / float(w.sum())
            torch.testing.assert_close(a, expected)
    # after many steps of a steady climb the average trails the weights by decay / (1 - decay) = 3 steps
    torch.testing.assert_close(avg.params[0].detach() - avg.average[0], torch.full_like(avg.average[0], 3.0), atol=0.01, rtol=0)
    own = [p.detach().clone() for p in avg.params]
    with avg.swapped_in():
        for p, a in zip(avg.params, avg.average):
            assert torch.equal(p, a)
    for p, o in zip(avg.params, own):
        assert torch.equal(p, o)


def test_training_with_an_average_keeps_the_average_and_trains_the_same_trajectory(data, tmp_path):  # noqa: F811
    """One epoch (so the kept epoch is the last): the weights train as without averaging, and the
    model ends holding the checkpoint's bias-corrected running average, not its last weights."""
    tok, tr, va, _ = data
    train(make_model(tok), cfg(epochs=1), tr, va, checkpoint_dir=tmp_path / "plain", quiet=True)
    averaged = make_model(tok)  # built right before training: training draws dropout masks from torch's generator
    train(averaged, cfg(epochs=1, ema_decay=0.9), tr, va, checkpoint_dir=tmp_path / "ema", quiet=True)
    raw_plain = {k[6:]: v for k, v in load_tensors(tmp_path / "plain" / CHECKPOINT)[0].items() if k.startswith("model.")}
    tensors = load_tensors(tmp_path / "ema" / CHECKPOINT)[0]
    raw = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    assert_same_weights(raw, raw_plain)  # averaging only watches
    kept = weights(averaged)
    steps = int(tensors["ema_steps"])
    assert steps == -(-len(tr.label) // 32)  # one update per optimizer step (32-pair batches)
    averages = {k[4:]: v / (1 - 0.9 ** steps) for k, v in tensors.items() if k.startswith("ema.")}
    assert averages and all(torch.allclose(kept[k], v) for k, v in averages.items())
    assert any(not torch.allclose(kept[k], raw[k]) for k in averages)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_ema_decay_outside_0_to_1_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=bad)


def test_a_resume_with_another_ema_decay_is_refused(data, tmp_path):  # noqa: F811
    tok, tr, va, _ = data
    train(make_model(tok), cfg(epochs=1), tr, va, checkpoint_dir=tmp_path, quiet=True)
    with pytest.raises(ConfigError, match="ema_decay 0.0 \\(now 0.9\\)"):
        train(make_model(tok), cfg(epochs=2, ema_decay=0.9), tr, va, checkpoint_dir=tmp_path, resume=True, quiet=True)


@pytest.mark.parametrize("metric", ["f1", "ap"])
def test_selection_metric_picks_the_epoch_kept_and_stops_early_on_it(data, metric):  # noqa: F811
    tok, tr, va, _ = data
    result = train(make_model(tok), cfg(epochs=6, patience=2, selection_metric=metric), tr, va, quiet=True)
    scores = [r[f"valid_{metric}"] for r in result.history]
    best = int(np.argmax(scores))  # the first of equals, as the strict ">" keeps it
    assert result.best_epoch == best + 1
    assert (result.best_ap, result.best_f1) == (result.history[best]["valid_ap"], result.history[best]["valid_f1"])
    assert len(scores) == 6 or len(scores) == best + 3  # ran out of epochs, or stopped 2 epochs after the best


def test_the_two_metrics_can_keep_different_epochs(data):  # noqa: F811
    """On this data and seed they differ, so the option changes what is kept (not a no-op)."""
    tok, tr, va, _ = data
    by_f1 = train(make_model(tok), cfg(epochs=6, patience=100), tr, va, quiet=True)
    by_ap = train(make_model(tok), cfg(epochs=6, patience=100, selection_metric="ap"), tr, va, quiet=True)
    assert [r["valid_ap"] for r in by_f1.history] == [r["valid_ap"] for r in by_ap.history]  # the same training
    assert by_f1.best_epoch != by_ap.best_epoch


def test_an_unknown_selection_metric_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="selection_metric must be f1 or ap, got 'auc'"):
        TrainConfig(selection_metric="auc")


@pytest.mark.parametrize("options, epochs", [
    ({}, 1),  # MiniLM's layers under both towers: one epoch (README, "A seventh")
    ({"embedding_init": "trained"}, 4),  # a vocabulary trained on the data: nothing pre-trained
    ({"backbone_layers": 0, "query_backbone_layers": 0}, 4),  # the seed preset's word embeddings only
    ({"backbone_layers": 0}, 1),  # the query tower still has its pre-trained layers
    ({"embedding_init": "trained", "epochs": 2}, 2),  # given epochs always win
    ({"epochs": 3}, 3),
])
def test_epochs_default_to_one_unless_both_towers_learn_from_scratch(options, epochs):
    from defectnas import DefectClassifier
    from defectnas.config import PRESETS, SCRATCH_EPOCHS

    assert TrainConfig().epochs == 1 and SCRATCH_EPOCHS == 4
    assert DefectClassifier(**options).configs()[1].epochs == epochs
    assert DefectClassifier(**PRESETS["seed"]).configs()[1].epochs == SCRATCH_EPOCHS
