"""The training loop: variants, early stopping, best weights, and checkpoint/resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from defectnas.config import ModelConfig, TrainConfig
from defectnas.data import build_triplets
from defectnas.data.tokenizer import TextTokenizer
from defectnas.model import DefectNet
from defectnas.storage import load_tensors
from defectnas.training import Pairs, Triplets, predict_logits, train
from defectnas.training import trainer as trainer_module
from defectnas.training.trainer import CHECKPOINT

QLEN, TLEN = 6, 8


class Killed(Exception):
    """Stands in for a kill between two epochs."""


@pytest.fixture(scope="module")
def data(synthetic_split):
    train_df = synthetic_split["train"].iloc[:192].reset_index(drop=True)
    valid_df = synthetic_split["valid"]
    tok = TextTokenizer.train(pd_texts(train_df), vocab_size=200)

    def pairs(df):
        return Pairs(tok.encode(df["query"].tolist(), QLEN), tok.encode(df["title"].tolist(), TLEN), df["label"].to_numpy(np.int64))

    trip = build_triplets(train_df, seed=0)
    triplets = Triplets(tok.encode(trip["query"].tolist(), QLEN), tok.encode(trip["positive"].tolist(), TLEN),
                        tok.encode(trip["negative"].tolist(), TLEN))
    return tok, pairs(train_df), pairs(valid_df), triplets


def pd_texts(df):
    return sorted(set(df["query"]) | set(df["title"]))


def make_model(tok, seed: int = 0, dropout: float = 0.1) -> DefectNet:
    """A tiny net; seeds torch, so dropout masks follow from ``seed`` too (as ``fit`` does).

    Build each model right before training it: ``train`` draws dropout masks from torch's
    global generator.
    """
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=16, query_layers=[{}], title_layers=[{}, {}], vocab_size=tok.vocab_size, embedding_init="trained",
                      dense_hidden=16, query_max_len=QLEN, title_max_len=TLEN, dropout=dropout)
    return DefectNet(cfg)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"variant": "dl-gs", "epochs": 2, "batch_size": 32, "lr": 3e-3, "patience": 100, "seed": 0, **kw})


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_changes_weights_and_records_history(data):
    tok, tr, va, trip = data
    model = make_model(tok)
    before = weights(model)
    result = train(model, cfg(epochs=2), tr, va, quiet=True)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(h["phase"] == "classify" and 0.0 <= h["valid_f1"] <= 1.0 and np.isfinite(h["loss"]) for h in result.history)
    assert result.best_epoch in (1, 2) and result.best_f1 == max(h["valid_f1"] for h in result.history)
    assert result.threshold == result.history[result.best_epoch - 1]["threshold"]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_same_seed_same_weights(data):
    tok, tr, va, _ = data
    a = make_model(tok)
    train(a, cfg(epochs=1), tr, va, quiet=True)
    b = make_model(tok)
    train(b, cfg(epochs=1), tr, va, quiet=True)
    assert_same_weights(weights(a), weights(b))
    c = make_model(tok)
    train(c, cfg(epochs=1, seed=1), tr, va, quiet=True)  # other batch order
    assert any(not torch.equal(v, weights(a)[k]) for k, v in weights(c).items())


@pytest.mark.parametrize("variant", ["dl-jl", "transfer"])
@pytest.mark.parametrize("triplets", [None, "empty"])
def test_triplet_variants_need_triplets(data, variant, triplets):
    tok, tr, va, _ = data
    if triplets == "empty":
        empty = np.zeros((0, QLEN), dtype=np.int64)
        triplets = Triplets(empty, np.zeros((0, TLEN), np.int64), np.zeros((0, TLEN), np.int64))
    with pytest.raises(ValueError, match="triplets"):
        train(make_model(tok), cfg(variant=variant), tr, va, triplets, quiet=True)


def test_transfer_pretrains_on_triplets_then_classifies(data):
    tok, tr, va, trip = data
    model = make_model(tok)
    result = train(model, cfg(variant="transfer", epochs=1, pretrain_epochs=2), tr, va, trip, quiet=True)
    assert [h["phase"] for h in result.history] == ["pretrain", "pretrain", "classify"]
    assert "valid_f1" not in result.history[0] and "valid_f1" in result.history[2]
    assert result.best_epoch == 3


def test_dl_jl_uses_the_triplet_term(data):
    tok, tr, va, trip = data
    plain, joint = make_model(tok), make_model(tok)
    train(plain, cfg(variant="dl-jl", epochs=1, beta=0.0), tr, va, trip, quiet=True)
    train(joint, cfg(variant="dl-jl", epochs=1, beta=5.0), tr, va, trip, quiet=True)
    assert any(not torch.equal(v, weights(plain)[k]) for k, v in weights(joint).items())


def test_early_stopping_keeps_the_best_epoch_weights(data, monkeypatch):
    """Validation F1 falls after epoch 1: stop after `patience` bad epochs, end with epoch 1's weights."""
    tok, tr, va, _ = data
    scores = iter([0.9, 0.5, 0.4, 0.3, 0.2])
    monkeypatch.setattr(trainer_module, "best_threshold", lambda labels, probs: (0.42, next(scores)))
    model = make_model(tok)
    result = train(model, cfg(epochs=5, patience=2), tr, va, quiet=True)
    assert len(result.history) == 3  # epoch 1 best, epochs 2-3 worse → stop
    assert result.best_epoch == 1 and result.best_f1 == 0.9 and result.threshold == 0.42

    one_epoch = make_model(tok)
    scores = iter([0.9])
    train(one_epoch, cfg(epochs=1), tr, va, quiet=True)
    assert_same_weights(weights(model), weights(one_epoch))


def test_predict_logits_is_deterministic_and_restores_mode(data):
    tok, tr, va, _ = data
    model = make_model(tok, dropout=0.5).train()
    a = predict_logits(model, va.query, va.title, batch_size=7)
    b = predict_logits(model, va.query, va.title, batch_size=1000)
    assert a.shape == (len(va.label),) and np.allclose(a, b, atol=1e-5)
    assert model.training
    assert predict_logits(model, va.query[:0], va.title[:0]).shape == (0,)


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_is_written_each_epoch_with_config(data, tmp_path):
    tok, tr, va, _ = data
    logged = []
    train(make_model(tok), cfg(epochs=2), tr, va, checkpoint_dir=tmp_path, quiet=True, log=logged.append)
    tensors, meta = load_tensors(tmp_path / CHECKPOINT)
    assert meta["epoch"] == 2 and meta["stopped_early"] is False
    assert meta["train_config"]["epochs"] == 2 and meta["train_config"]["seed"] == 0
    assert any(k.startswith("model.") for k in tensors) and any(k.startswith("best.") for k in tensors)
    assert any(k.startswith("optim.") for k in tensors) and "rng.torch" in tensors
    assert [json.loads(m)["epoch"] for m in logged] == [1, 2]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("variant,ema_decay", [("dl-gs", 0.0), ("dl-jl", 0.0), ("dl-gs", 0.9)])
def test_resume_after_a_kill_reproduces_the_uninterrupted_run(data, tmp_path, variant, ema_decay):
    """Killed after epoch 1 of 3, resumed: same weights, threshold and history as a straight run (dropout on);
    with ``ema_decay`` the weights' moving average resumes too."""
    tok, tr, va, trip = data
    cfg_ = lambda **kw: cfg(ema_decay=ema_decay, **kw)  # noqa: E731
    straight = make_model(tok)
    expected = train(straight, cfg_(variant=variant, epochs=3), tr, va, trip, checkpoint_dir=tmp_path / "a", quiet=True)
    expected_last = {k[6:]: v for k, v in load_tensors(tmp_path / "a" / CHECKPOINT)[0].items() if k.startswith("model.")}

    def die_after_epoch_1(message: str) -> None:
        if json.loads(message).get("epoch") == 1:
            raise Killed  # epoch 1's line is logged after its checkpoint: epoch 1 is on disk

    with pytest.raises(Killed):
        train(make_model(tok), cfg_(variant=variant, epochs=3), tr, va, trip, checkpoint_dir=tmp_path / "b", quiet=True, log=die_after_epoch_1)
    assert load_tensors(tmp_path / "b" / CHECKPOINT)[1]["epoch"] == 1

    logged = []
    resumed = make_model(tok, seed=123)  # any init: the checkpoint replaces it
    got = train(resumed, cfg_(variant=variant, epochs=3), tr, va, trip, checkpoint_dir=tmp_path / "b", resume=True, quiet=True, log=logged.append)
    assert "resumed" in logged[0] and "after epoch 1" in logged[0]
    assert_same_weights(weights(resumed), weights(straight))
    got_last = {k[6:]: v for k, v in load_tensors(tmp_path / "b" / CHECKPOINT)[0].items() if k.startswith("model.")}
    assert_same_weights(got_last, expected_last)
    assert got.threshold == expected.threshold and got.best_epoch == expected.best_epoch and got.best_f1 == expected.best_f1
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(got.history) == strip(expected.history)


def test_finished_checkpoint_is_not_retrained(data, tmp_path, monkeypatch):
    tok, tr, va, _ = data
    first = make_model(tok)
    expected = train(first, cfg(epochs=2), tr, va, checkpoint_dir=tmp_path, quiet=True)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(trainer_module, "weighted_bce", no_training)
    again = make_model(tok, seed=5)
    got = train(again, cfg(epochs=2), tr, va, checkpoint_dir=tmp_path, resume=True, quiet=True)
    assert_same_weights(weights(again), weights(first))
    assert (got.threshold, got.best_f1, got.best_epoch) == (expected.threshold, expected.best_f1, expected.best_epoch)
    assert len(got.history) == 2


def test_without_resume_a_checkpoint_is_ignored(data, tmp_path):
    tok, tr, va, _ = data
    train(make_model(tok), cfg(epochs=1, seed=3), tr, va, checkpoint_dir=tmp_path, quiet=True)
    fresh = make_model(tok)
    train(fresh, cfg(epochs=1), tr, va, checkpoint_dir=tmp_path, quiet=True)
    reference = make_model(tok)
    train(reference, cfg(epochs=1), tr, va, quiet=True)
    assert_same_weights(weights(fresh), weights(reference))


def test_resume_with_more_epochs_continues_training(data, tmp_path):
    """epochs=1 run, then resume with epochs=2 == a straight epochs=2 run."""
    tok, tr, va, _ = data
    straight = make_model(tok)
    train(straight, cfg(epochs=2), tr, va, quiet=True)

    train(make_model(tok), cfg(epochs=1), tr, va, checkpoint_dir=tmp_path, quiet=True)
    extended = make_model(tok)
    result = train(extended, cfg(epochs=2), tr, va, checkpoint_dir=tmp_path, resume=True, quiet=True)
    assert len(result.history) == 2
    assert_same_weights(weights(extended), weights(straight))


def test_checkpoint_leaves_frozen_weights_out_and_resume_checks_them(data, tmp_path):
    """Frozen tensors (pre-trained layers in real models) are not stored, only their digest: a
    killed run resumes to the straight run's weights, and a model with other frozen weights is refused."""
    from defectnas.errors import ConfigError

    tok, tr, va, _ = data

    def model() -> DefectNet:
        m = make_model(tok)
        for p in m.title_encoder.parameters():
            p.requires_grad_(False)
        return m

    straight = model()
    train(straight, cfg(epochs=3), tr, va, checkpoint_dir=tmp_path / "a", quiet=True)
    tensors, meta = load_tensors(tmp_path / "a" / CHECKPOINT)
    frozen = {k for k, p in straight.named_parameters(remove_duplicate=False) if not p.requires_grad}
    stored = {k.split(".", 1)[1] for k in tensors if k.startswith(("model.", "best."))}
    assert frozen and not frozen & stored and set(meta["frozen"]["names"]) == frozen
    assert {k for k, p in straight.named_parameters() if p.requires_grad} <= stored

    def die_after_epoch_1(message: str) -> None:
        if json.loads(message).get("epoch") == 1:
            raise Killed

    with pytest.raises(Killed):
        train(model(), cfg(epochs=3), tr, va, checkpoint_dir=tmp_path / "b", quiet=True, log=die_after_epoch_1)
    resumed = model()
    train(resumed, cfg(epochs=3), tr, va, checkpoint_dir=tmp_path / "b", resume=True, quiet=True)
    assert_same_weights(weights(resumed), weights(straight))

    other = model()
    with torch.no_grad():
        next(other.title_encoder.parameters()).add_(1.0)
    with pytest.raises(ConfigError, match="other frozen"):
        train(other, cfg(epochs=3), tr, va, checkpoint_dir=tmp_path / "b", resume=True, quiet=True)


def test_the_frozen_digest_is_hashed_once_and_follows_an_in_place_change(monkeypatch):
    import defectnas.training.trainer as trainer

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    for p in net[0].parameters():
        p.requires_grad_(False)
    names = trainer._frozen_names(net)
    calls = []
    real = trainer.tensors_digest
    monkeypatch.setattr(trainer, "tensors_digest", lambda t: calls.append(1) or real(t))
    first = trainer._frozen_digest(net, names)
    assert trainer._frozen_digest(net, names) == first and len(calls) == 1  # a later epoch's checkpoint reuses it
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert trainer._frozen_digest(net, names) != first and len(calls) == 2  # changed weights are hashed again


def test_a_diverged_loss_is_one_line_naming_the_learning_rate():
    from defectnas.config import TrainConfig
    from defectnas.errors import ConfigError, TrainingDivergedError
    from defectnas.training.trainer import check_finite_loss

    check_finite_loss([0.7, 0.5], 1, "training", "--lr 0.002")  # finite: nothing to say
    with pytest.raises(TrainingDivergedError, match=r"training diverged in epoch 3: the loss became nan .*--lr 10.*smaller"):
        check_finite_loss([0.7, float("nan"), float("inf")], 3, "training", "--lr 10")
    for bad in (0.0, -1e-3, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="lr must be a finite number more than 0"):
            TrainConfig(lr=bad)
