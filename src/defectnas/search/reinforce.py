"""REINFORCE for the controller: moving-average baseline, entropy bonus, checkpointable state.

Why REINFORCE: a child's reward (validation F1, optionally scaled by measured latency) is not
differentiable in the architecture, so the controller follows the policy gradient
``∇ E[R] ≈ (R − b) ∇ log p(arch)``. The baseline ``b`` is an exponential moving average of the
rewards (it cuts the gradient's variance without biasing it); the entropy bonus keeps the policy
exploring instead of locking onto the first lucky architecture.

Batched updates: the controller samples a batch of B architectures from the same policy (B =
``--controller-batch``, at least ``--workers``), the children are trained (in parallel where
there are workers), and one update averages their B terms. With B ≥ 2 the advantages are
*standardised over the batch*, ``A = (R − mean) / std`` — rewards of children from one policy
compared with each other, so the step size does not depend on the reward's scale (an AP of 0.2
or an F1 of 0.5) and a batch of equal rewards teaches nothing. With B = 1 the advantage is
``R − b`` against the moving average (plain one-sample REINFORCE). The baseline absorbs the
rewards in trial order either way. A batch is the unit of a controller step, so the same seed and
batch size give the same architectures whatever the timing.

The agent state — controller weights, Adam moments, the sampling generator, the baseline, the
step — is saved as one safetensors file (tensors) with JSON metadata (scalars), written
atomically: a kill leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..storage import load_tensors, save_tensors
from .controller import Controller, Sample


def advantages(rewards: Sequence[float], baseline: float) -> list[float]:
    """Standardised over the batch when it has two or more rewards, else ``R − baseline``."""
    if len(rewards) < 2:
        return [r - baseline for r in rewards]
    mean = sum(rewards) / len(rewards)
    std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5
    return [(r - mean) / std if std > 1e-12 else 0.0 for r in rewards]


class Reinforce:
    """Owns the controller, its optimizer, its sampling generator and the reward baseline."""

    def __init__(
        self,
        controller: Controller,
        lr: float = 0.02,  # Adam learning rate of the controller (high: a search sees ~200 rewards, not 10^4)
        baseline_decay: float = 0.9,  # moving-average baseline: b ← decay·b + (1 − decay)·R
        entropy_weight: float = 1e-3,  # entropy bonus in the loss
        seed: int = 0,  # seeds the sampling generator
    ) -> None:
        self.lr, self.baseline_decay, self.entropy_weight = lr, baseline_decay, entropy_weight
        self.controller = controller
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None  # set from the first batch's mean reward
        self.step = 0  # controller updates done
        self.history: list[dict[str, float]] = []  # per step: mean reward, baseline, loss, entropy

    def sample(self) -> Sample:
        """The next architecture from the policy, drawn with the agent's own generator."""
        with torch.no_grad():
            return self.controller.sample(self.generator)

    def update(self, actions: Sequence[Sequence[int]], rewards: Sequence[float], learn: bool = True) -> dict[str, float]:
        """One controller step on a batch of (sampled actions, reward); ``learn=False`` only moves the baseline."""
        rewards = [float(r) for r in rewards]
        if not rewards:
            raise ValueError("update needs at least one reward")
        if self.baseline is None:
            self.baseline = sum(rewards) / len(rewards)
        b = self.baseline
        loss_value, entropy_value = 0.0, 0.0
        if learn:
            self.controller.train()
            terms, entropies = [], []
            for acts, a in zip(actions, advantages(rewards, b)):
                log_prob, entropy = self.controller.evaluate_actions(acts)
                terms.append(-a * log_prob - self.entropy_weight * entropy)
                entropies.append(entropy.detach())
            loss = torch.stack(terms).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_value, entropy_value = float(loss.detach()), float(torch.stack(entropies).mean())
        for r in rewards:  # in trial order, so replaying a batch moves the baseline identically
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r
        self.step += 1
        record = {"step": self.step, "mean_reward": sum(rewards) / len(rewards), "advantage_baseline": b,
                  "baseline": self.baseline, "loss": loss_value, "entropy": entropy_value}
        self.history.append(record)
        return record

    # ------------------------------------------------------------ checkpoint
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write the whole agent state (and ``extra`` JSON metadata) atomically to ``path``."""
        tensors = {f"controller.{k}": v for k, v in self.controller.state_dict().items()}
        opt = self.optimizer.state_dict()
        for idx, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optimizer.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors["generator"] = self.generator.get_state()  # uint8 tensor
        meta = {
            "step": self.step,
            "baseline": self.baseline,
            "history": self.history,
            "optimizer_groups": opt["param_groups"],
            "hparams": {"lr": self.lr, "baseline_decay": self.baseline_decay, "entropy_weight": self.entropy_weight},
            "extra": extra or {},
        }
        save_tensors(path, tensors, meta)

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore a state written by :meth:`save`; returns its ``extra`` metadata."""
        tensors, meta = load_tensors(path)
        self.controller.load_state_dict({k[len("controller."):]: v for k, v in tensors.items() if k.startswith("controller.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
        self.generator.set_state(tensors["generator"])
        self.step, self.baseline, self.history = int(meta["step"]), meta["baseline"], list(meta["history"])
        return dict(meta.get("extra", {}))

