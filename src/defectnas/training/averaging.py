"""An exponential moving average (EMA) of the trained weights, validated and kept instead of them.

Why: with Adam at ``train``'s learning rate the weights at the end of an epoch are one noisy point
of the trajectory, and which epoch early stopping keeps depends on a small validation split: one
seed moves the default model's test AP by up to 0.025 (README, "Architecture search"). The
average of the last few hundred steps' weights (Polyak & Juditsky 1992; the "EMA" of timm's and
torch's ``swa_utils``) sits nearer the middle of that noise. Only trainable parameters are
averaged (frozen pre-trained layers do not move).

The average starts at zero and is divided by ``1 − decayᵗ`` after t steps, as Adam corrects its
moment estimates (Kingma & Ba 2015): a weighted mean of the steps' weights only. Started at the
initial weights instead (torch's ``AveragedModel``), it keeps 0.99¹⁴² ≈ 24% of them after the
first epoch of ``train``'s default (142 steps of 256 pairs on the Home Depot sample); the warm-up
of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``, ``min(decay, (1 + t) / (10 + t))``,
stays below 0.99 for 890 steps, so any decay ≥ 0.99 would average alike over ``train``'s ~570.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

EMA_PREFIX = "ema."  # checkpoint tensor names: ema.<parameter name>
STEPS = "ema_steps"  # checkpoint tensor: the updates so far (the bias correction depends on it)


class WeightAverage:
    """``sum = decay · sum + (1 − decay) · weights`` after every optimizer step; the average
    after t steps is ``sum / (1 − decayᵗ)`` (the weights of steps 1…t, step s weighted by
    decay^(t−s), normalised).

    ``decay`` 0.99 averages over ~100 steps (its half-life is 69): about half an epoch of
    ``train``'s default on the Home Depot sample. Before the first step it is the weights given."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.sums = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def update(self) -> None:
        """Fold the current weights in (call after ``optimizer.step()``)."""
        self.steps += 1
        with torch.no_grad():
            for s, p in zip(self.sums, self.params):
                s.lerp_(p, 1.0 - self.decay)

    @property
    def average(self) -> list[torch.Tensor]:
        """The bias-corrected averages, one per trainable parameter (the weights themselves before any step)."""
        if self.steps == 0:
            return [p.detach().clone() for p in self.params]
        correction = 1.0 - self.decay ** self.steps
        return [s / correction for s in self.sums]

    @contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its own again after it."""
        own = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(self.params, own):
                    p.copy_(o)

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint: the running sums, named ``ema.<parameter name>``, and the step count (``ema_steps``)."""
        return {**{EMA_PREFIX + n: s for n, s in zip(self.names, self.sums)}, STEPS: torch.tensor(self.steps)}

    def load(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Restore from checkpoint tensors; False when they hold none (a checkpoint of a run
        without averaging), which the trainer refuses to resume."""
        if STEPS not in tensors or not all(EMA_PREFIX + n in tensors for n in self.names):
            return False
        with torch.no_grad():
            for n, s in zip(self.names, self.sums):
                s.copy_(tensors[EMA_PREFIX + n])
        self.steps = int(tensors[STEPS])
        return True
