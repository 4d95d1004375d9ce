"""Search strategies: how the next batch of architectures is chosen.

Why three: a reinforcement-learning search claims to beat simpler ones, and that claim is only
worth what its comparison at equal budget shows. All three share the trial log, the
checkpoint (one :class:`~defectnas.search.reinforce.Reinforce` agent holds the sampling
generator for every strategy, and the controller for ``rl``), ``--resume`` and seeds:

- ``rl``: the paper's LSTM controller (1 layer, 40 units) trained by REINFORCE, advantages
  standardised over each controller batch.
- ``random``: uniform sampling over the space (the baseline every NAS result must beat).
- ``evolution``: regularized evolution (Real et al. 2019, "Regularized Evolution for Image
  Classifier Architecture Search") — the strongest simple baseline in the NAS literature. The
  population is the ``population`` most recent trials (aging: the oldest dies, however good);
  each child is a one-decision mutation of the best of ``sample_size`` members drawn at random.
  The first ``population`` trials are uniform samples. Because the population is read off the
  trial log, a resumed search rebuilds it exactly.

``propose(n, history)`` returns ``n`` (architecture, actions) pairs, where ``history`` holds the
finished trials before this batch, in trial order; ``learn(actions, rewards)`` ends the batch.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .controller import Controller
from .reinforce import Reinforce
from .space import Architecture, Space

STRATEGIES = ("rl", "random", "evolution")


class Strategy:
    """Chooses architectures; ``agent`` carries the checkpointed state (generator, controller)."""

    def __init__(self, space: Space, agent: Reinforce) -> None:
        self.space, self.agent = space, agent

    def propose(self, n: int, history: Sequence[dict[str, Any]]) -> list[tuple[Architecture, list[int]]]:
        raise NotImplementedError

    def learn(self, actions: Sequence[Sequence[int]], rewards: Sequence[float]) -> None:
        self.agent.update(actions, rewards, learn=False)  # moves the baseline and the step (logged; no learning)


class RLStrategy(Strategy):
    def propose(self, n, history):
        out = []
        for _ in range(n):
            s = self.agent.sample()
            out.append((s.architecture, list(s.actions)))
        return out

    def learn(self, actions, rewards):
        self.agent.update(actions, rewards, learn=True)


class RandomStrategy(Strategy):
    def propose(self, n, history):
        out = []
        for _ in range(n):
            actions = self.space.sample_actions(self.agent.generator)
            out.append((self.space.decode(actions), actions))
        return out


class EvolutionStrategy(Strategy):
    def __init__(self, space: Space, agent: Reinforce, population: int = 20, sample_size: int = 5) -> None:
        super().__init__(space, agent)
        self.population, self.sample_size = max(2, population), max(1, sample_size)

    def propose(self, n, history):
        g = self.agent.generator
        if len(history) < self.population:  # the initial population: uniform samples
            return RandomStrategy(self.space, self.agent).propose(n, history)
        members = list(history)[-self.population:]
        out = []
        for _ in range(n):
            picked = torch.randperm(len(members), generator=g)[: self.sample_size].tolist()
            parent = max((members[i] for i in picked), key=lambda r: (r["reward"], r["trial"]))
            child = self.space.mutate(parent["architecture"], g)
            out.append((child, self.space.encode(child)))
        return out


def make_strategy(name: str, space: Space, agent: Reinforce, population: int = 20, sample_size: int = 5) -> Strategy:
    if name == "rl":
        return RLStrategy(space, agent)
    if name == "random":
        return RandomStrategy(space, agent)
    if name == "evolution":
        return EvolutionStrategy(space, agent, population, sample_size)
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")


def make_agent(space: Space, hidden: int, lr: float, baseline_decay: float, entropy_weight: float, seed: int) -> Reinforce:
    return Reinforce(Controller(space, hidden=hidden, seed=seed), lr=lr, baseline_decay=baseline_decay,
                     entropy_weight=entropy_weight, seed=seed)
