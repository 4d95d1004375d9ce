"""The LSTM controller and REINFORCE: sampling, teacher forcing, learning, checkpoints."""

from __future__ import annotations

import pytest
import torch

from defectnas.search.controller import Controller
from defectnas.search.reinforce import Reinforce, advantages
from defectnas.search.space import SearchSpace, ServingSpace, arch_key

from .fakes import fake_f1


def test_controller_shape_and_sample():
    space = SearchSpace()
    c = Controller(space)
    assert c.lstm.hidden_size == 40 and isinstance(c.lstm, torch.nn.LSTMCell)
    s = c.sample(torch.Generator().manual_seed(0))
    assert len(s.architecture) == 5 and len(s.actions) == 15
    assert s.log_prob.requires_grad and s.log_prob.item() < 0
    max_entropy = 5 * (2 * torch.log(torch.tensor(4.0)) + torch.log(torch.tensor(3.0)))
    assert 0 < s.entropy.item() <= max_entropy.item() + 1e-5
    # teacher forcing reproduces the sampled choice's log-probability
    log_prob, entropy = c.evaluate(s.architecture)
    assert log_prob.item() == pytest.approx(s.log_prob.item(), abs=1e-6)
    assert entropy.item() == pytest.approx(s.entropy.item(), abs=1e-6)


def test_same_seed_same_architectures():
    space = SearchSpace()
    runs = []
    for _ in range(2):
        agent = Reinforce(Controller(space, seed=1), seed=1)
        runs.append([arch_key(agent.sample().architecture) for _ in range(5)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1
    other = Reinforce(Controller(space, seed=2), seed=2)
    assert [arch_key(other.sample().architecture) for _ in range(5)] != runs[0]


def test_reinforce_learns_a_toy_reward():
    """More GLU layers → higher reward: the controller should learn to pick GLU."""
    torch.manual_seed(0)
    agent = Reinforce(Controller(SearchSpace(), seed=0), seed=0)
    rewards = []
    for _ in range(120):
        s = agent.sample()
        rewards.append(fake_f1(s.architecture))
        agent.update([s.actions], [rewards[-1]])
    assert sum(rewards[-30:]) / 30 > sum(rewards[:30]) / 30 + 0.03
    assert agent.step == 120 and agent.history[-1]["entropy"] < agent.history[0]["entropy"]
    glu = agent.controller.probabilities()[0]["('glu', 1)"]
    assert glu > 0.4  # started near 1/4


def test_baseline_is_a_moving_average_and_batches_share_it():
    agent = Reinforce(Controller(SearchSpace(num_layers=1)), baseline_decay=0.5)
    a = agent.sample().actions
    rec = agent.update([a, a], [1.0, 0.0])
    assert rec["advantage_baseline"] == 0.5  # first batch: its mean
    assert agent.baseline == pytest.approx(0.5 * (0.5 * 0.5 + 0.5 * 1.0) + 0.5 * 0.0)
    before = {k: v.clone() for k, v in agent.controller.state_dict().items()}
    agent.update([a], [0.3], learn=False)  # random search: the baseline moves, the policy does not
    assert all(torch.equal(before[k], v) for k, v in agent.controller.state_dict().items())


def test_checkpoint_restores_everything(tmp_path):
    space = SearchSpace()
    agent = Reinforce(Controller(space, seed=0), seed=0)
    for _ in range(3):
        s = agent.sample()
        agent.update([s.actions], [fake_f1(s.architecture)])
    agent.save(tmp_path / "c.safetensors", {"next_trial": 3})
    expected = [arch_key(agent.sample().architecture) for _ in range(4)]

    restored = Reinforce(Controller(space, seed=9), seed=9)
    assert restored.load(tmp_path / "c.safetensors") == {"next_trial": 3}
    assert restored.step == 3 and restored.baseline == agent.history[-1]["baseline"]
    assert [arch_key(restored.sample().architecture) for _ in range(4)] == expected
    # the optimizer continues too: one more identical update gives identical weights
    actions = space.encode(space.default_architecture())
    agent2 = Reinforce(Controller(space, seed=0), seed=0)
    agent2.load(tmp_path / "c.safetensors")
    restored.update([actions], [0.9])
    agent2.update([actions], [0.9])
    for (k, v), w in zip(restored.controller.state_dict().items(), agent2.controller.state_dict().values()):
        assert torch.equal(v, w), k


def test_batched_reinforce_standardises_advantages_and_learns():
    assert advantages([1.0, 0.0], baseline=5.0) == [1.0, -1.0]  # over the batch, not against the baseline
    assert advantages([0.3, 0.3, 0.3], baseline=0.0) == [0.0, 0.0, 0.0]  # equal rewards teach nothing
    assert advantages([0.4], baseline=0.1) == [pytest.approx(0.3)]  # one sample: against the moving average
    agent = Reinforce(Controller(SearchSpace(), seed=0), seed=0)
    rewards = []
    for _ in range(40):  # 40 steps of 4 children
        batch = [agent.sample() for _ in range(4)]
        r = [fake_f1(s.architecture) for s in batch]
        rewards += r
        agent.update([s.actions for s in batch], r)
    assert sum(rewards[-40:]) / 40 > sum(rewards[:40]) / 40 + 0.03


def test_controller_skips_inactive_decisions_of_the_serving_space():
    space = ServingSpace()
    c = Controller(space, seed=0)
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        s = c.sample(g)
        cells = len(s.architecture["title_cells"])
        cell_actions = [a for d, a in zip(space.decisions, s.actions) if d.layer >= 0]
        assert sum(a >= 0 for a in cell_actions) == 3 * cells and sum(a == -1 for a in cell_actions) == 3 * (5 - cells)
        log_prob, _ = c.evaluate_actions(s.actions)  # teacher forcing on the sampled actions is exact
        assert log_prob.item() == pytest.approx(s.log_prob.item(), abs=1e-6)
        assert space.decode(s.actions) == s.architecture
